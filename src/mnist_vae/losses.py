"""The VAE objective as pure functions of tensors (Kingma & Welling, 2014).

Every function returns per-image values (shape ``(batch,)``) in nats, so callers can average
over a batch, a split or a class without weighting mistakes from partial batches.
"""

from keras import ops

# Images are zero-padded 28x28 -> 32x32 for the stride-2 convolutions; the likelihood is
# computed on the original pixels only, so numbers compare with the literature.
from mnist_vae.data import PAD


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


def reconstruction_loss(x, logits, pad=PAD):
    """Binary cross-entropy from logits summed over the unpadded pixels: (batch,) nats.

    ``x`` (..., H, W, C) broadcasts against ``logits`` (..., H, W, C), e.g. one image batch
    (1, B, H, W, C) against K decodings of it (K, B, H, W, C) giving (K, B), with no copies of x.
    """
    x = crop_padding(x, pad)
    logits = crop_padding(logits, pad)
    per_pixel = -bernoulli_log_prob(ops.cast(x, logits.dtype), logits)
    return ops.sum(per_pixel, axis=(-3, -2, -1))


def kl_loss(z_mean, z_log_var):
    """Analytic KL(q(z|x) || N(0, I)) summed over latent dimensions: (batch,) nats."""
    return ops.sum(kl_per_dimension(z_mean, z_log_var), axis=-1)


def kl_per_dimension(z_mean, z_log_var):
    """Analytic KL per latent dimension: (batch, latent_dim) nats."""
    return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def vae_loss(x, logits, z_mean, z_log_var, beta=1.0, pad=PAD):
    """Named per-image terms of the negative ELBO: ``loss = reconstruction_loss + beta * kl_loss``."""
    rec = reconstruction_loss(x, logits, pad)
    kl = kl_loss(z_mean, z_log_var)
    return {"loss": rec + beta * kl, "reconstruction_loss": rec, "kl_loss": kl}


LOG_2PI = 1.8378770664093453  # log(2 pi)


def gaussian_log_prob(z, mean, log_var):
    """log N(z; mean, diag(exp(log_var))) summed over the last axis; broadcasts leading axes."""
    return -0.5 * ops.sum(LOG_2PI + log_var + ops.square(z - mean) * ops.exp(-log_var), axis=-1)


def standard_normal_log_prob(z):
    """log N(z; 0, I) summed over the last axis: the prior's log-density."""
    return -0.5 * ops.sum(LOG_2PI + ops.square(z), axis=-1)
