"""Image geometry: a dataset's images are ``side`` x ``side`` x ``channels``; models see them zero-padded
to a multiple of 4 (MNIST's 28x28 -> 32x32, so two stride-2 convolutions give an 8x8 grid, as in
the seed), and only the original pixels are scored, so likelihoods compare with the literature.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Geometry:
    """How a dataset's images are laid out: their own pixels (the scored ones) and the models' padding."""

    side: int  # height = width of the dataset's images
    channels: int  # 1 grey, 3 RGB
    pad: int  # zero border added on each side, so the model's side is a multiple of 4

    @property
    def image_shape(self):
        """(side, side, channels): the dataset's pixels, the ones scored."""
        return (self.side, self.side, self.channels)

    @property
    def model_shape(self):
        """(side + 2 pad, side + 2 pad, channels): what encoders take and decoders return."""
        padded = self.side + 2 * self.pad
        return (padded, padded, self.channels)

    @property
    def scored_dims(self):
        """Sub-pixels scored per image: the denominator of bits/dim."""
        return self.side * self.side * self.channels

    def describe(self):
        """'28x28 pixels' or '32x32x3 sub-pixels': what a per-image number is summed over."""
        side = f"{self.side}x{self.side}"
        return f"{side} pixels" if self.channels == 1 else f"{side}x{self.channels} sub-pixels"

    def to_model_input(self, images):
        """uint8 (n, side, side[, channels]) -> float32 (n, *model_shape) in [0, 1], zero-padded."""
        x = images.astype("float32") / 255.0
        if x.ndim == 3:
            x = x[..., None]
        p = self.pad
        return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))

    def from_model_input(self, x):
        """(n, *model_shape) -> (n, *image_shape): drop the zero padding again."""
        return crop_padding(x, self.pad)


# The geometries of the registered datasets (data.DATASETS names one per dataset).
GREY_28 = Geometry(side=28, channels=1, pad=2)
COLOUR_32 = Geometry(side=32, channels=3, pad=0)

# The defaults of everything that takes a pad: MNIST's geometry.
PAD = GREY_28.pad
IMAGE_SIDE = GREY_28.image_shape[:2]
SCORED_PIXELS = GREY_28.scored_dims


def to_model_input(images):
    """uint8 (n, 28, 28) -> float32 (n, 32, 32, 1) in [0, 1]: ``GREY_28.to_model_input``."""
    return GREY_28.to_model_input(images)


def from_model_input(x, pad=PAD):
    """(n, H, W, c) -> (n, H - 2 pad, W - 2 pad, c): drop the zero padding again."""
    return crop_padding(x, pad)


def crop_padding(tensor, pad=PAD):
    """Drop the ``pad``-pixel zero border added by the data pipeline: (..., 32, 32, c) -> (..., 28, 28, c)."""
    if pad == 0:
        return tensor
    return tensor[..., pad:-pad, pad:-pad, :]
