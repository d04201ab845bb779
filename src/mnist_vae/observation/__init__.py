"""Image geometry and the observation models p(x | decoder output): the one package that knows pixels.

Geometry: a dataset's images are ``side`` x ``side`` x ``channels``; models see them zero-padded
to a multiple of 4 (MNIST's 28x28 -> 32x32, so two stride-2 convolutions give an 8x8 grid, as in
the seed), and only the original pixels are scored, so likelihoods compare with the literature.

Observation models (``LIKELIHOODS``): a decoder returns distribution parameters, never
probabilities; a likelihood turns them into a log-probability, mean images and samples.

- ``bernoulli``: factorised Bernoulli per pixel; parameters are logits. Grey-level targets in
  [0, 1] are allowed (the seed's objective); it is a likelihood only of binary images.
- ``bernoulli_ar``: the same Bernoulli, but each pixel's logit is conditioned on the pixels before
  it (the causal head of ``resnet_ar``), so the decoder reads the image too.
- ``logistic_mixture``: the discretised logistic mixture of PixelCNN++ (Salimans et al., 2017)
  for 8-bit images, grey or colour: a proper likelihood over the 256 levels of every sub-pixel.

Each observation model is a class with the members ``docs/extending.md`` lists (log-probability,
mean, sampling, one autoregressive step's draw, which data it suits, how evaluation describes its
protocol); nothing outside this package names a likelihood's formulas.
"""

from keras import ops

from mnist_vae.observation.bernoulli import AutoregressiveBernoulli, Bernoulli, bernoulli_log_prob, probabilities
from mnist_vae.observation.geometry import (COLOUR_32, GREY_28, IMAGE_SIDE, PAD, SCORED_PIXELS, Geometry,
                                            crop_padding, from_model_input, to_model_input)
from mnist_vae.observation.logistic_mixture import DiscretizedLogisticMixture

__all__ = ["AutoregressiveBernoulli", "Bernoulli", "COLOUR_32", "DEFAULT_LIKELIHOOD", "DiscretizedLogisticMixture", "GREY_28", "Geometry",
           "IMAGE_SIDE", "LIKELIHOODS", "PAD", "SCORED_PIXELS", "bernoulli_log_prob", "crop_padding",
           "default_likelihood", "from_model_input", "get_likelihood", "log_likelihood", "mean_images",
           "probabilities", "to_model_input"]


# The likelihood a function assumes when it is given none: the seed's.
DEFAULT_LIKELIHOOD = "bernoulli"

# name -> observation model; a new likelihood is one entry here. The first of each kind that models
# an image's channels is the default (``default_likelihood``), so the order matters.
LIKELIHOODS = {
    "bernoulli": Bernoulli(),
    "bernoulli_ar": AutoregressiveBernoulli(),
    "logistic_mixture": DiscretizedLogisticMixture(),
}


def default_likelihood(autoregressive, channels):
    """The likelihood used where none is named: the first registered one of the decoder's kind that models
    ``channels``-channel images (Bernoulli pixels for grey, a logistic mixture for colour); where none
    does, the first of the kind, whose ``check`` then says why."""
    kind = [name for name, likelihood in LIKELIHOODS.items() if likelihood.autoregressive == autoregressive]
    return next((name for name in kind if LIKELIHOODS[name].check(channels) is None), kind[0])


def get_likelihood(name):
    """The registered likelihood called ``name``."""
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}") from None


def log_likelihood(x, params, pad=PAD, likelihood=DEFAULT_LIKELIHOOD):
    """log p(x | params) summed over the unpadded pixels: (...,) nats.

    ``x`` (..., H, W, C) broadcasts against ``params`` (..., H, W, P), e.g. one image batch
    (1, B, H, W, C) against K decodings of it (K, B, H, W, P) giving (K, B), with no copies of x.
    """
    x = crop_padding(x, pad)
    # The sums over hundreds of pixels are float32 whatever the decoder computed in (a bf16
    # output layer hands bf16 parameters over); cast after the crop, so only what is scored.
    params = ops.cast(crop_padding(params, pad), "float32")
    return ops.sum(get_likelihood(likelihood).log_prob(x, params), axis=(-3, -2, -1))


def mean_images(params, pad=PAD, likelihood=DEFAULT_LIKELIHOOD):
    """Decoder output (n, H, W, P) -> mean images (n, h, w, C) in [0, 1], padding removed (NumPy)."""
    return get_likelihood(likelihood).mean(crop_padding(ops.convert_to_numpy(params), pad))
