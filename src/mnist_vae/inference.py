"""Turning a trained VAE into arrays: latents, images, fixed evaluation noise.

Every function takes the ``models.VAE`` (its encoder, decoder and observation model together),
so what kind of decoder it has is asked of the model, never guessed from the decoder.
"""

from statistics import NormalDist

import keras
import numpy as np
from keras import ops

from mnist_vae.observation import mean_images


def _one_hot(vae, labels, n):
    """A conditional model's one-hot labels (n, classes) as NumPy, else None."""
    if not vae.conditional:
        return None
    if labels is None:
        raise ValueError("a conditional VAE needs a class label per image")
    labels = np.asarray(labels)
    if labels.ndim == 2:  # already (n, classes) rows: one-hot, or a mixture of labels (interpolation)
        return labels.astype(np.float32)
    return np.eye(vae.num_classes, dtype=np.float32)[np.broadcast_to(labels, (n,)).astype(np.int64)]


def predict(model, inputs, batch_size=512):
    """``model.predict(inputs)`` as NumPy, without its per-call input pipeline: ``predict_on_batch`` per slice.

    Why: ``predict`` builds a tf.data pipeline on every call, about 85 ms on these CPUs, which was
    half of the per-epoch TensorBoard pictures' cost (a few hundred images each, three calls).
    ``inputs``: an array or a list of arrays with the same number of rows.
    """
    n = len(keras.tree.flatten(inputs)[0])
    parts = [model.predict_on_batch(keras.tree.map_structure(lambda x, lo=lo: x[lo:lo + batch_size], inputs))
             for lo in range(0, max(n, 1), batch_size)]
    return keras.tree.map_structure(lambda *rows: np.concatenate([np.asarray(r) for r in rows]), *parts)


def encode(vae, images, labels=None, batch_size=512):
    """Posterior means and log-variances, each (n, latent_dim) float32 (a conditional model reads ``labels``)."""
    inputs = vae.encoder_inputs(images, _one_hot(vae, labels, len(images)))
    z_mean, z_log_var = predict(vae.encoder, inputs, batch_size)
    return np.asarray(z_mean), np.asarray(z_log_var)


def decode(vae, z, labels=None, batch_size=512, seed=0):
    """Mean images (n, h, w, c) in [0, 1] for latents z (n, latent_dim), padding removed.

    A conditional model decodes each z with its label (``labels``: (n,) integers, one for all,
    or (n, classes) rows of label weights).
    For an autoregressive decoder, the means p(x_ij = 1 | x_<ij, z) along one ancestral sample
    drawn with ``seed`` (the same seed gives the same pictures at every epoch).
    """
    z = np.asarray(z, "float32")
    conditioning = _one_hot(vae, labels, len(z))
    if vae.autoregressive:
        return sample_autoregressive(vae, z, conditioning, seed, batch_size)
    params = predict(vae.decoder, vae.decoder_inputs(z, labels=conditioning), batch_size)
    return mean_images(params, vae.pad, vae.likelihood)


def sample_autoregressive(vae, z, one_hot_labels=None, seed=0, batch_size=512, window=True):
    """Ancestral sampling, pixel by pixel in raster order: per-pixel means (n, h, w, c) of the samples.

    The latent features are computed once; each step reruns only the causal head, and only on
    the window of pixels the current one depends on (the rows above it and the columns either
    side, clipped at the image's edges, where the head's own zero padding takes over), through
    ``predict_on_batch``: its compiled call costs a third of an eager one on the small batches
    plots sample. ``window=False`` runs the head on whole rows instead: the same samples, slower
    (``benchmarks/ar_sampling.py`` compares the two).
    """
    features_of, head = vae.decoder.features, vae.decoder.pixel_head
    padded, _, channels = vae.image_shape
    height = width = padded - 2 * vae.pad  # the head runs on the scored pixels only
    above, beside = head.rows_seen_above(), head.columns_seen_beside() if window else width
    rng = np.random.default_rng([seed, 2])
    out = []
    for start in range(0, len(z), batch_size):
        labels = one_hot_labels[start:start + batch_size] if vae.conditional else None
        latent = vae.decoder_inputs(z[start:start + batch_size], labels=labels, with_images=False)
        features = ops.convert_to_numpy(features_of(latent))  # (b, 28, 28, F)
        b, height, width, _ = features.shape
        uniforms = rng.random((b, height, width, channels), dtype=np.float32)
        x = np.zeros((b, height, width, channels), "float32")  # sampled pixels so far, 0 elsewhere
        means = np.zeros_like(x)
        for i in range(height):
            lo = max(0, i - above)
            for j in range(width):
                left, right = max(0, j - beside), min(width, j + beside + 1)
                window = (slice(None), slice(lo, i + 1), slice(left, right))
                logits = np.asarray(head.predict_on_batch({"features": features[window], "image": x[window]}))[:, -1, j - left]  # (b, c)
                p = vae.observation.mean(logits)
                means[:, i, j] = p
                x[:, i, j] = vae.observation.sample(logits, uniforms[:, i, j])  # the likelihood draws the pixel
        out.append(means)
    return np.concatenate(out) if out else np.zeros((0, height, width, channels), "float32")


def reconstruct(vae, images, labels=None, batch_size=512, seed=0):
    """Decode each image's posterior mean (with its label, if conditional): (n, h, w, c), deterministic for a given seed."""
    z_mean, _ = encode(vae, images, labels, batch_size)
    return decode(vae, z_mean, labels, batch_size, seed)


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


def active_units(z_mean, threshold=0.01):
    """Dimensions d whose Cov_x(E_q[z_d]) exceeds ``threshold`` (Burda et al.): a (L,) bool mask."""
    return np.var(np.asarray(z_mean, np.float64), axis=0) > threshold


def dead_relu_units(model, inputs, batch_size=500):
    """Per ReLU-activated Dense layer of ``model``: (units that are 0 for every one of ``inputs``, units).

    A dead unit passes no gradient, and none of the information the layer sees: the seed encoder's
    16-unit bottleneck with a few live units makes z_mean an affine function of those few, and the
    latent scatter collapses onto lines. Returns {layer name: (dead, units)}, in layer order.
    """
    dense = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.relu]
    if not dense:
        return {}
    probe = keras.Model(model.inputs, [layer.output for layer in dense])
    outputs = probe.predict(inputs, batch_size=batch_size, verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {layer.name: (int((np.asarray(out) <= 0).all(axis=0).sum()), int(layer.units))
            for layer, out in zip(dense, outputs)}


def interpolation_latents(z_start, z_end, steps):
    """Straight lines from each ``z_start`` row to the matching ``z_end`` row: (pairs, steps, L), ends included."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[None, :, None]
    return (1.0 - t) * z_start[:, None] + t * z_end[:, None]


def principal_axes(z, k=2):
    """The mean of ``z`` (n, d), its first ``k`` principal axes (k, d) and their explained variance ratios (k,)."""
    centre = z.mean(axis=0)
    _, s, vt = np.linalg.svd(z - centre, full_matrices=False)
    ratios = s**2 / max(float(np.sum(s**2)), 1e-12)
    return centre, vt[:k], ratios[:k]


def principal_components(z, k=2):
    """Project ``z`` (n, d) onto its first ``k`` principal components: (n, k) and explained variance ratios."""
    centre, axes, ratios = principal_axes(z, k)
    return (z - centre) @ axes.T, ratios
