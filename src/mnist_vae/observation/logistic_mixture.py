"""PixelCNN++'s discretised logistic mixture (Salimans et al., 2017): a likelihood of 8-bit sub-pixels."""

import math

import numpy as np
from keras import ops


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

    def log_prob(self, x, params):
        """log p(x | params) per pixel (summed over channels, mixed over components): (..., H, W, C) -> (..., H, W, 1)

        Returned with a channel axis of 1 so callers sum over (H, W, C) as for the other models.
        """
        channels = x.shape[-1]
        x = ops.cast(x, params.dtype)  # leading axes broadcast against params' (K decodings of one batch)
        y = ops.expand_dims(2.0 * x - 1.0, -2)  # (..., 1, C) in [-1, 1]
        logits, loc, log_scale, coeff = self.split(params, channels)
        centred = y - _shifted_locations(loc, coeff, y, channels)  # (..., K, C)
        log_p = _log_bin_mass(centred, log_scale, y)  # (..., K, C)
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


def _shifted_locations(loc, coeff, y, channels):
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


def _log_bin_mass(centred, log_scale, y):
    """log of each 8-bit bin's mass under the logistics: the end bins take the tails. (..., K, C)."""
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
    return log_p
