"""Turning trained encoders and decoders into arrays: latents, images, fixed evaluation noise."""

from statistics import NormalDist

import numpy as np
from keras import ops

from mnist_vae.models import autoregressive_parts, is_autoregressive, rows_seen_above
from mnist_vae.observation import IMAGE_SIDE, mean_images, probabilities


def encode(encoder, images, batch_size=512):
    """Posterior means and log-variances, each (n, latent_dim) float32."""
    z_mean, z_log_var = encoder.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(z_mean), np.asarray(z_log_var)


def decode(decoder, z, batch_size=512, seed=0):
    """Pixel means (n, 28, 28, c) for latents z (n, latent_dim).

    For an autoregressive decoder, the means p(x_ij = 1 | x_<ij, z) along one ancestral sample
    drawn with ``seed`` (the same seed gives the same pictures at every epoch).
    """
    z = np.asarray(z, "float32")
    if is_autoregressive(decoder):
        return sample_autoregressive(decoder, z, seed, batch_size)
    return mean_images(decoder.predict(z, batch_size=batch_size, verbose=0))


def sample_autoregressive(decoder, z, seed=0, batch_size=512):
    """Ancestral sampling, pixel by pixel in raster order: per-pixel means (n, 28, 28, c) of the samples.

    The latent features are computed once; each step reruns only the causal head, and only on
    the rows the current pixel depends on.
    """
    features_of, head = autoregressive_parts(decoder)
    above = rows_seen_above(head)
    channels = decoder.inputs[1].shape[-1]
    rng = np.random.default_rng([seed, 2])
    out = []
    for start in range(0, len(z), batch_size):
        features = ops.convert_to_numpy(features_of(z[start:start + batch_size]))  # (b, 28, 28, F)
        b, height, width, _ = features.shape
        uniforms = rng.random((b, height, width, channels), dtype=np.float32)
        x = np.zeros((b, height, width, channels), "float32")  # sampled pixels so far, 0 elsewhere
        means = np.zeros_like(x)
        for i in range(height):
            lo = max(0, i - above)
            for j in range(width):
                logits = ops.convert_to_numpy(head([features[:, lo:i + 1], x[:, lo:i + 1]]))[:, -1, j]  # (b, c)
                p = probabilities(logits)
                means[:, i, j] = p
                x[:, i, j] = uniforms[:, i, j] < p
        out.append(means)
    return np.concatenate(out) if out else np.zeros((0, *IMAGE_SIDE, channels), "float32")


def reconstruct(encoder, decoder, images, batch_size=512, seed=0):
    """Decode each image's posterior mean: a reconstruction (n, 28, 28, c), deterministic for a given seed."""
    z_mean, _ = encode(encoder, images, batch_size)
    return decode(decoder, z_mean, batch_size, seed)


def prior_noise(n, latent_dim, seed):
    """Fixed draws from N(0, I): the same ``seed`` gives the same samples at every epoch."""
    return np.random.default_rng([seed, 1]).standard_normal((n, latent_dim)).astype("float32")


def manifold_latents(grid_size, latent_dim=2, dims=(0, 1)):
    """Latents on a ``grid_size`` x ``grid_size`` grid at Normal quantiles over ``dims``.

    Row-major from the top-left, with dimension ``dims[1]`` decreasing down the rows so the
    picture reads like a plot with y upwards. Other dimensions are 0 (the prior mean).
    Returns (grid_size**2, latent_dim) latents and the (grid_size,) quantile values.
    """
    # Quantiles of the centres of grid_size equal-probability bins, as in Kingma & Welling.
    values = np.array([NormalDist().inv_cdf((i + 0.5) / grid_size) for i in range(grid_size)], "float32")
    z = np.zeros((grid_size, grid_size, latent_dim), "float32")
    z[..., dims[0]] = values[None, :]
    z[..., dims[1]] = values[::-1, None]
    return z.reshape(-1, latent_dim), values


def principal_components(z, k=2):
    """Project ``z`` (n, d) onto its first ``k`` principal components: (n, k) and explained variance ratios."""
    centred = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ratios = s**2 / max(float(np.sum(s**2)), 1e-12)
    return centred @ vt[:k].T, ratios[:k]
