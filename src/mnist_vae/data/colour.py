"""Colour MNIST: MNIST digits and backgrounds in seeded colours, 32x32x3, built from the MNIST files deterministically
(the colour path's dataset on machines without CIFAR)."""

import dataclasses

import numpy as np

from mnist_vae.data.idx import read_idx_dataset
from mnist_vae.observation import GREY_28

COLOUR_SEED = 20261125


def colourise(images, split):
    """uint8 grey digits (n, 28, 28) -> uint8 colour images (n, 32, 32, 3), a fixed function of (split, image index).

    Each image gets a background colour ``bg`` (uniform over 0..255 per channel) and a digit
    colour ``fg = (bg + 128 + d) mod 256`` per channel with ``d`` uniform over -64..63, so every
    channel of the digit differs from the background by at least 64 levels. Both come from
    ``numpy.random.default_rng([COLOUR_SEED, s])`` with s = 0 for train, 1 for test, drawn
    as one (n, 2, 3) array of integers (background, then offset). The digit is padded by 2
    background pixels to 32x32 and blended in integers: pixel = bg + (fg - bg) * grey / 255,
    rounded half up.
    """
    rng = np.random.default_rng([COLOUR_SEED, {"train": 0, "test": 1}[split]])
    draws = rng.integers(0, 256, size=(len(images), 2, 3))
    bg = draws[:, 0]
    fg = (bg + 128 + draws[:, 1] % 128 - 64) % 256
    # Each image's 256 grey levels -> colours, as a table (n, 256, 3); then one gather per pixel.
    levels = np.arange(256)[None, :, None]
    table = (bg[:, None, :] + np.floor_divide(2 * (fg - bg)[:, None, :] * levels + 255, 510)).astype(np.uint8)
    grey = np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(images), -1)  # (n, 1024)
    rows = (np.arange(len(images), dtype=np.int64) * 256)[:, None] + grey  # row of each pixel in the flat table
    return np.take(table.reshape(-1, 3), rows.ravel(), axis=0).reshape(len(images), 32, 32, 3)


def read_colour_mnist(spec, folder):
    """(train, test) of colour MNIST: ``spec`` names MNIST's files, read as the grey 28x28 images they are."""
    grey = read_idx_dataset(dataclasses.replace(spec, geometry=GREY_28), folder)
    return tuple((colourise(images, split), labels) for split, (images, labels) in zip(("train", "test"), grey))
