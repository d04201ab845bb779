"""Image geometry and the observation models p(x | decoder output): the one module that knows pixels.

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
"""

import dataclasses
import math

import numpy as np
from keras import ops


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


class DiscretizedLogisticMixture:
    """PixelCNN++'s discretised mixture of logistics (Salimans et al., 2017) for 8-bit sub-pixels.

    Per pixel, ``components`` mixture weights; per component and channel a location and a log
    scale; and, for colour, per component ``C (C - 1) / 2`` coefficients that shift channel c's
    location linearly by the channels before it (G by R; B by R and G), so colours within a pixel
    are correlated while pixels stay conditionally independent given z. A value ``v`` of 0..255 is
    the bin [y - 1/255, y + 1/255] of y = 2 v / 255 - 1 under the logistic; the end bins take the
    tails, so the 256 probabilities of a sub-pixel sum to 1.
    """

    name = "logistic_mixture"
    autoregressive = False
    binarize = ("none",)
    bf16_parameters = False  # locations must resolve bins 2/255 wide: the output layer stays float32
    fix = "models 8-bit levels; drop --binarize dynamic"
    components = 5
    min_log_scale = -7.0  # the narrowest bin-resolving logistic; keeps exp(-log_scale) finite

    def parameter_channels(self, channels):
        """Mixture logits, then locations, log scales and channel coefficients per component."""
        return self.components * (1 + 2 * channels + channels * (channels - 1) // 2)

    def check(self, channels):
        """Any channel count."""
        return None

    def split(self, params, channels):
        """(..., K*(1+2C+C(C-1)/2)) -> logits (..., K), locations (..., K, C), log scales (..., K, C), coefficients (..., K, C(C-1)/2)."""
        k = self.components
        n_coeff = channels * (channels - 1) // 2
        sizes = [k, k * channels, k * channels, k * n_coeff]
        edges = np.cumsum([0, *sizes])
        lead = tuple(ops.shape(params)[:-1])  # dynamic sides allowed (an unknown batch size while tracing)
        parts = [params[..., edges[i]:edges[i + 1]] for i in range(4)]
        logits = parts[0]
        loc = ops.reshape(parts[1], (*lead, k, channels))
        log_scale = ops.maximum(ops.reshape(parts[2], (*lead, k, channels)), self.min_log_scale)
        coeff = ops.tanh(ops.reshape(parts[3], (*lead, k, n_coeff))) if n_coeff else None
        return logits, loc, log_scale, coeff

    def _locations(self, loc, coeff, y, channels):
        """Per-component locations with channel c shifted by coefficient x channels before c of ``y``."""
        if coeff is None:
            return loc
        shifted, i = [loc[..., 0]], 0
        for c in range(1, channels):
            shift = 0.0
            for prev in range(c):
                shift = shift + coeff[..., i] * y[..., prev]
                i += 1
            shifted.append(loc[..., c] + shift)
        return ops.stack(shifted, axis=-1)

    def log_prob(self, x, params):
        """log p(x | params) per pixel (summed over channels, mixed over components): (..., H, W, C) -> (..., H, W, 1)

        Returned with a channel axis of 1 so callers sum over (H, W, C) as for the other models.
        """
        channels = x.shape[-1]
        x = ops.cast(x, params.dtype)  # leading axes broadcast against params' (K decodings of one batch)
        y = ops.expand_dims(2.0 * x - 1.0, -2)  # (..., 1, C) in [-1, 1]
        logits, loc, log_scale, coeff = self.split(params, channels)
        centred = y - self._locations(loc, coeff, y, channels)  # (..., K, C)
        inv_scale = ops.exp(-log_scale)
        upper = inv_scale * (centred + 1.0 / 255.0)
        lower = inv_scale * (centred - 1.0 / 255.0)
        log_cdf_upper = upper - ops.softplus(upper)  # log sigmoid(upper): the bottom bin's mass
        log_survival_lower = -ops.softplus(lower)  # log(1 - sigmoid(lower)): the top bin's mass
        # log(sigmoid(u) - sigmoid(l)) = log sigmoid(u) + log(1 - exp(log sigmoid(l) - log sigmoid(u))),
        # stable while the bin holds mass; a bin far in a narrow logistic's tail underflows, and
        # there the density at its centre times its width (2/255) stands in.
        delta = ops.sigmoid(upper) - ops.sigmoid(lower)
        middle = inv_scale * centred
        log_density_mid = middle - log_scale - 2.0 * ops.softplus(middle) + math.log(2.0 / 255.0)
        log_bin = ops.where(delta > 1e-5, ops.log(ops.maximum(delta, 1e-12)), log_density_mid)
        log_p = ops.where(y < -0.999, log_cdf_upper, ops.where(y > 0.999, log_survival_lower, log_bin))
        per_component = ops.sum(log_p, axis=-1) + ops.log_softmax(logits, axis=-1)  # (..., K)
        return ops.expand_dims(ops.logsumexp(per_component, axis=-1), -1)

    def mean(self, params, channels=None):
        """E[x] (NumPy, in [0, 1]) per sub-pixel: per component, each channel's mean shifts by the means before it.

        The clipping into the two end bins is ignored (the mean of the unclipped mixture, clipped).
        """
        logits, loc, _, coeff = self._numpy_parts(params, channels)
        means = loc.copy()  # (..., K, C)
        i = 0
        for c in range(1, loc.shape[-1]):
            for prev in range(c):
                means[..., c] += coeff[..., i] * means[..., prev]
                i += 1
        weights = _softmax(logits)[..., None]
        return np.clip((weights * means).sum(axis=-2), -1.0, 1.0) * 0.5 + 0.5

    def _numpy_parts(self, params, channels=None):
        params = np.asarray(params, np.float32)
        channels = channels or self._channels(params.shape[-1])
        return tuple(None if t is None else np.asarray(ops.convert_to_numpy(t))
                     for t in self.split(ops.convert_to_tensor(params), channels))

    def sample(self, params, uniforms, channels=None):
        """Draws (NumPy, levels / 255) from ``uniforms`` (..., 2 + C) in [0, 1): component, then channel by channel."""
        logits, loc, log_scale, coeff = self._numpy_parts(params, channels)
        channels = loc.shape[-1]
        cumulative = np.cumsum(_softmax(logits), axis=-1)
        pick = np.minimum((uniforms[..., :1] > cumulative).sum(axis=-1), self.components - 1)  # (...,)
        take = lambda a: np.take_along_axis(a, pick[..., None, None], axis=-2)[..., 0, :]  # noqa: E731
        loc, scale = take(loc), np.exp(take(log_scale))
        coeff = take(coeff) if coeff is not None else None
        y = np.zeros((*pick.shape, channels), np.float32)
        i = 0
        for c in range(channels):
            u = np.clip(uniforms[..., 1 + c], 1e-5, 1 - 1e-5)
            shift = 0.0
            for prev in range(c):
                shift = shift + coeff[..., i] * y[..., prev]
                i += 1
            value = loc[..., c] + shift + scale[..., c] * (np.log(u) - np.log1p(-u))
            y[..., c] = np.clip(value, -1.0, 1.0)
        return np.round((y + 1.0) * 127.5) / 255.0

    def uniforms_per_pixel(self, channels):
        """Uniform draws ``sample`` takes per pixel."""
        return 1 + channels

    def protocol(self, binarize, seed, split):
        """How an evaluation's numbers under this likelihood compare with others', in a sentence."""
        return ("8-bit levels under a discretised likelihood: a normalised likelihood of the 8-bit "
                f"{split} images, comparable in bits/dim with other models of the same images")

    def _channels(self, parameter_channels):
        for c in range(1, 5):
            if self.parameter_channels(c) == parameter_channels:
                return c
        raise ValueError(f"{parameter_channels} parameters per pixel fit no channel count")


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# name -> observation model; a new likelihood is one entry here. The first of each kind that models
# an image's channels is the default (``default_likelihood``), so the order matters.
LIKELIHOODS = {
    "bernoulli": Bernoulli(),
    "bernoulli_ar": AutoregressiveBernoulli(),
    "logistic_mixture": DiscretizedLogisticMixture(),
}


def default_likelihood(autoregressive, channels):
    """The likelihood used where none is named: the first registered one of the decoder's kind that models
    ``channels``-channel images (Bernoulli pixels for grey, a logistic mixture for colour)."""
    for name, likelihood in LIKELIHOODS.items():
        if likelihood.autoregressive == autoregressive and likelihood.check(channels) is None:
            return name
    raise ValueError(f"no registered likelihood models {channels}-channel images for this decoder")


def get_likelihood(name):
    """The registered likelihood called ``name``."""
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}") from None


def log_likelihood(x, params, pad=PAD, likelihood="bernoulli"):
    """log p(x | params) summed over the unpadded pixels: (...,) nats.

    ``x`` (..., H, W, C) broadcasts against ``params`` (..., H, W, P), e.g. one image batch
    (1, B, H, W, C) against K decodings of it (K, B, H, W, P) giving (K, B), with no copies of x.
    """
    x = crop_padding(x, pad)
    # The sums over hundreds of pixels are float32 whatever the decoder computed in (a bf16
    # output layer hands bf16 parameters over); cast after the crop, so only what is scored.
    params = ops.cast(crop_padding(params, pad), "float32")
    return ops.sum(get_likelihood(likelihood).log_prob(x, params), axis=(-3, -2, -1))


def mean_images(params, pad=PAD, likelihood="bernoulli"):
    """Decoder output (n, H, W, P) -> mean images (n, h, w, C) in [0, 1], padding removed (NumPy)."""
    return get_likelihood(likelihood).mean(crop_padding(ops.convert_to_numpy(params), pad))
