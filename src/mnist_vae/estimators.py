"""Held-out estimators of a trained VAE: the ELBO terms, and the importance-weighted bound on -log p(x).

The importance-weighted bound (Burda et al., 2015) with K samples z_k ~ q(z|x):

    -log p(x) <= -log (1/K) sum_k p(x, z_k) / q(z_k | x)

It equals the negative ELBO (in expectation) for K = 1 and tightens towards -log p(x) as K grows.
Samples are processed in chunks whose log-sum-exp is folded into a running total, so memory does
not grow with K. Draw j of a batch depends only on (seed, batch start, j), so a batch scored again
gives the same numbers (what ``evaluate.Progress`` relies on to continue a killed evaluation).
"""

import math

import keras
import numpy as np
from keras import ops

from mnist_vae import losses
from mnist_vae.data import ImageBatches, keras_input, one_hot
from mnist_vae.models import AutoregressiveScorer


def evaluate_losses(vae, images, batch_size=128, labels=None, terms=None):
    """Mean negative ELBO (unweighted, whatever beta trained the model) and its terms over ``images``.

    One posterior sample per image; nats per image.

    Runs a fresh ``LossTerms`` model's ``predict`` rather than ``vae.evaluate``, whose compiled
    step keeps the precision it was traced with: this way a model switched to float32 after
    mixed-precision training is scored in float32. Compiled, not eager: the eager loop took
    66 s for a seed run's 70,000 images on the AVX2 CPU, this 44 s. The per-image terms are summed
    in float64 here rather than in a float32 metric. Scoring several sets, pass one ``LossTerms(vae)``
    as ``terms``: each new one traces its predict step again.
    """
    conditioning = one_hot(labels, vae.num_classes) if vae.conditional else None
    terms = (terms or LossTerms(vae)).predict(keras_input(ImageBatches(images, batch_size, labels=conditioning)), verbose=0)
    return {name: float(np.asarray(terms[name], np.float64).sum()) / len(images)
            for name in ("loss", "reconstruction_loss", "kl_loss")}


class LossTerms(keras.Model):
    """``vae``'s per-image ``loss_terms`` (unweighted) on one posterior sample, as a model to ``predict`` with."""

    def __init__(self, vae, **kwargs):
        super().__init__(**kwargs)
        self.vae = vae

    def call(self, inputs):
        """``inputs`` as ``vae`` takes them; a dict of (batch,) nats."""
        return self.vae.loss_terms(inputs["images"], self.vae(inputs, training=False))


def log_weights(vae, x, z_mean, z_log_var, eps, y=None, scorer=None):
    """For K draws per image: (log p(x, z_k) - log q(z_k|x), log p(x|z_k)), each (K, B) nats.

    ``x`` (B, H, W, C) model-ready images; ``z_mean``, ``z_log_var`` (B, L) from the encoder;
    ``eps`` (K, B, L) standard normal noise; ``y`` (B, classes) one-hot labels of a conditional
    model, which then scores p(x, z | y) / q(z | x, y). An autoregressive decoder is run through
    ``scorer`` (a ``models.AutoregressiveScorer`` of it, made here if not given).
    """
    k, b, latent_dim = eps.shape
    z = z_mean[None] + ops.exp(0.5 * z_log_var)[None] * eps  # (K, B, L)
    z_flat = ops.reshape(z, (k * b, latent_dim))
    y_rep = _repeat(y, k) if vae.conditional else None
    if vae.autoregressive:
        # x given z in one pass; the head's image-only first layer once per image, not per draw.
        scorer = scorer or AutoregressiveScorer(vae.decoder)
        logits = scorer(vae.decoder_inputs(z_flat, None, y_rep, with_images=False), x, k)  # (K*B, H, W, P)
    else:
        logits = vae.decoder(vae.decoder_inputs(z_flat, None, y_rep), training=False)  # (K*B, H, W, P)
    # x broadcasts against the K decodings: (1, B, H, W, C) vs (K, B, H, W, P) -> (K, B).
    log_px_z = -losses.reconstruction_loss(x[None], ops.reshape(logits, (k, b, *logits.shape[1:])), vae.pad,
                                           vae.likelihood)
    log_pz = losses.standard_normal_log_prob(z)  # (K, B)
    log_qz = losses.gaussian_log_prob(z, z_mean[None], z_log_var[None])  # (K, B)
    return log_px_z + log_pz - log_qz, log_px_z


def _repeat(t, k):
    """(B, ...) -> (K*B, ...): K copies of the batch, copy-major (as z is flattened)."""
    return ops.reshape(ops.tile(t[None], (k,) + (1,) * len(t.shape)), (k * t.shape[0], *t.shape[1:]))


def _noise(seed, batch_start, first, last, batch, latent_dim):
    """(last - first, batch, L) draws; draw j of a batch depends only on (seed, batch_start, j).

    So the estimate is the same whatever the chunk size.
    """
    return np.stack([
        np.random.default_rng([seed, batch_start, j]).standard_normal((batch, latent_dim), dtype=np.float32)
        for j in range(first, last)
    ])


def importance_weighted(vae, images, k=1000, batch_size=100, chunk_size=100, seed=0, labels=None, progress=None,
                        slot=0, scorer=None):
    """Per-image IW bound on -log p(x) and Monte-Carlo reconstruction term, each (n,) nats.

    For a conditional model, the bound on -log p(x | y) with ``labels`` (n,) integers (or one
    label for all). Memory is O(batch_size * chunk_size) images whatever ``k``; chunks are
    combined with a numerically stable log-sum-exp. With a ``Progress``, batches it already
    holds (in row ``slot``) are taken from it, and each new one is recorded there. ``scorer``:
    see ``log_weights`` (a benchmark passes another to compare).
    """
    if k < 1 or batch_size < 1 or chunk_size < 1:
        raise ValueError("k, batch_size and chunk_size must be at least 1")
    latent_dim = vae.latent_dim
    conditioning = None
    if vae.conditional:
        conditioning = one_hot(np.broadcast_to(np.asarray(labels), (len(images),)), vae.num_classes)
    nll = np.empty(len(images), np.float64)
    reconstruction = np.empty(len(images), np.float64)
    if vae.autoregressive and scorer is None:
        scorer = AutoregressiveScorer(vae.decoder)
    for start in range(0, len(images), batch_size):
        stop = min(len(images), start + batch_size)
        if progress is not None and progress.has(slot, start, stop):
            nll[start:stop], reconstruction[start:stop] = progress.get(slot, start, stop)
            continue
        x = ops.convert_to_tensor(images[start:stop])
        b = stop - start
        y = None if conditioning is None else ops.convert_to_tensor(conditioning[start:stop])
        z_mean, z_log_var = vae.encoder(vae.encoder_inputs(x, y), training=False)  # q(z|x) fixed for the batch
        running = np.full(b, -np.inf)  # log sum_k w_k so far
        rec_sum = np.zeros(b)
        for first in range(0, k, chunk_size):
            last = min(k, first + chunk_size)
            eps = ops.convert_to_tensor(_noise(seed, start, first, last, b, latent_dim))
            log_w, log_px_z = log_weights(vae, x, z_mean, z_log_var, eps, y, scorer)
            chunk = ops.convert_to_numpy(ops.logsumexp(log_w, axis=0)).astype(np.float64)
            running = np.logaddexp(running, chunk)
            rec_sum -= ops.convert_to_numpy(ops.sum(log_px_z, axis=0)).astype(np.float64)
        nll[start:stop] = math.log(k) - running
        reconstruction[start:stop] = rec_sum / k
        if progress is not None:
            progress.record(slot, start, nll[start:stop], reconstruction[start:stop])
    return nll, reconstruction


def bits_per_dim(nats, dims):
    """Nats per image of ``dims`` scored sub-pixels (``Geometry.scored_dims``) -> bits per sub-pixel."""
    return nats / (dims * math.log(2))
