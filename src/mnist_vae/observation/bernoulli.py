"""Bernoulli pixels: factorised (``bernoulli``) or conditioned on the pixels before each (``bernoulli_ar``)."""

import numpy as np
from keras import ops


def bernoulli_log_prob(x, logits):
    """Elementwise log p(x | logits) of a Bernoulli with ``x`` in [0, 1], stable for any logits."""
    # log sigmoid(l) * x + log sigmoid(-l) * (1 - x) = x*l - softplus(l); softplus written
    # as max(l, 0) + log1p(exp(-|l|)) so large |l| neither overflows nor loses precision.
    return x * logits - (ops.maximum(logits, 0.0) + ops.log1p(ops.exp(-ops.abs(logits))))


def probabilities(logits):
    """NumPy sigmoid of NumPy ``logits``, without overflow for large |logits|: p(x = 1)."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


class Bernoulli:
    """Factorised Bernoulli pixels; the decoder returns one logit per sub-pixel."""

    name = "bernoulli"
    autoregressive = False  # the decoder reads z (and a label), not the image
    binarize = ("none", "dynamic")  # the --binarize protocols it can be trained on
    bf16_parameters = True  # a bf16 logit is precise enough: under mixed_bfloat16 the output layer computes in bf16
    fix = ""  # what to do where it does not fit the data

    def parameter_channels(self, channels):
        """Decoder output channels for images of ``channels`` channels."""
        return channels

    def check(self, channels):
        """Why this likelihood cannot model images of ``channels`` channels, or None."""
        return None if channels == 1 else "a Bernoulli models single-channel pixels; use --likelihood logistic_mixture"

    def log_prob(self, x, params):
        """log p(x | params) per sub-pixel: (..., H, W, C), ``x`` in [0, 1] broadcasting against ``params``."""
        return bernoulli_log_prob(ops.cast(x, params.dtype), params)

    def mean(self, params):
        """E[x] (NumPy): p(x = 1) per sub-pixel."""
        return ops.convert_to_numpy(ops.sigmoid(ops.convert_to_tensor(params)))

    def sample(self, params, uniforms):
        """Draws (NumPy, same shape as ``params``) from uniform noise ``uniforms`` in [0, 1) (``uniforms_per_pixel`` per pixel)."""
        return (uniforms < self.mean(params)).astype(np.float32)

    def uniforms_per_pixel(self, channels):
        """Uniform draws ``sample`` takes per pixel: one per channel."""
        return channels

    def protocol(self, binarize, seed, split):
        """How an evaluation's numbers under this likelihood compare with others', in a sentence."""
        if binarize == "dynamic":
            return (f"dynamically binarised training; {split} split binarised once with seed {seed} "
                    "(numbers comparable with Burda et al. 2015 when K=5000 on the full test set)")
        return ("greyscale: targets are grey levels, so these Bernoulli numbers bound a training "
                "objective, not a normalised likelihood; compare only with the same protocol")


class AutoregressiveBernoulli(Bernoulli):
    """Bernoulli pixels, each logit conditioned on the pixels before it in raster order (``resnet_ar``).

    The same per-pixel formulas; the decoder reads the (causally masked) image beside z, so
    sampling runs pixel by pixel (``inference.sample_autoregressive``).
    """

    name = "bernoulli_ar"
    autoregressive = True
    binarize = ("dynamic",)
    fix = "models binary pixels; add --binarize dynamic"

    def check(self, channels):
        """Single-channel only: the causal head does not order colour channels."""
        return None if channels == 1 else "the autoregressive head models single-channel pixels"

    def mean(self, params):
        """E[x] (NumPy) by NumPy's overflow-free sigmoid: the sampler calls it on one pixel at a time."""
        return probabilities(np.asarray(params, np.float32))
