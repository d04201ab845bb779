"""Image geometry and the observation model p(x | decoder output): the one module that knows pixels.

Geometry: dataset images are 28x28; models see them zero-padded to 32x32 (two stride-2
convolutions then give an 8x8 grid, as in the seed), and only the original 28x28 pixels are
scored, so likelihoods compare with the literature.

Observation model: a decoder returns distribution parameters (for Bernoulli pixels, logits),
never probabilities; this module turns them into a log-likelihood, mean images and samples.
The autoregressive decoder of ``resnet_ar`` uses the same per-pixel Bernoulli, conditioned on
the pixels before each one.
"""

import numpy as np
from keras import ops

IMAGE_SIDE = (28, 28)  # the dataset's pixels: the ones that are scored
PAD = 2  # 28x28 -> 32x32 so two stride-2 convolutions give an 8x8 grid, as in the seed
SCORED_PIXELS = IMAGE_SIDE[0] * IMAGE_SIDE[1]


def to_model_input(images):
    """uint8 (n, 28, 28) -> float32 (n, 32, 32, 1) in [0, 1], zero-padded by 2 pixels."""
    x = images.astype("float32") / 255.0
    x = np.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD)))
    return x[..., None]


def from_model_input(x):
    """float32 (n, 32, 32, c) -> (n, 28, 28, c): drop the zero padding again."""
    return x[:, PAD:-PAD, PAD:-PAD]


def crop_padding(tensor, pad=PAD):
    """Drop the ``pad``-pixel zero border added by the data pipeline: (..., 32, 32, c) -> (..., 28, 28, c)."""
    if pad == 0:
        return tensor
    return tensor[..., pad:-pad, pad:-pad, :]


def bernoulli_log_prob(x, logits):
    """Elementwise log p(x | logits) of a Bernoulli with ``x`` in [0, 1], stable for any logits."""
    # log sigmoid(l) * x + log sigmoid(-l) * (1 - x) = x*l - softplus(l); softplus written
    # as max(l, 0) + log1p(exp(-|l|)) so large |l| neither overflows nor loses precision.
    return x * logits - (ops.maximum(logits, 0.0) + ops.log1p(ops.exp(-ops.abs(logits))))


def log_likelihood(x, logits, pad=PAD):
    """log p(x | logits) summed over the unpadded pixels: (...,) nats.

    ``x`` (..., H, W, C) broadcasts against ``logits`` (..., H, W, C), e.g. one image batch
    (1, B, H, W, C) against K decodings of it (K, B, H, W, C) giving (K, B), with no copies of x.
    """
    x = crop_padding(x, pad)
    logits = crop_padding(logits, pad)
    return ops.sum(bernoulli_log_prob(ops.cast(x, logits.dtype), logits), axis=(-3, -2, -1))


def mean_images(logits):
    """Decoder logits (n, 32, 32, c) -> pixel means (n, 28, 28, c) in [0, 1], padding removed (NumPy)."""
    return from_model_input(ops.convert_to_numpy(ops.sigmoid(ops.convert_to_tensor(logits))))


def probabilities(logits):
    """NumPy sigmoid of NumPy ``logits``, without overflow for large |logits|: p(x = 1)."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits))
