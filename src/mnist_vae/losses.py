"""The VAE objective as pure functions of tensors (Kingma & Welling, 2014).

Every function returns per-image values (shape ``(batch,)``) in nats, so callers can average
over a batch, a split or a class without weighting mistakes from partial batches.
"""

from keras import ops

from mnist_vae import observation
from mnist_vae.observation import DEFAULT_LIKELIHOOD, PAD


def reconstruction_loss(x, params, pad=PAD, likelihood=DEFAULT_LIKELIHOOD):
    """-log p(x | decoder output) summed over the unpadded pixels: (batch,) nats.

    ``params`` are the decoder's output; for the default Bernoulli, logits, and this is their binary
    cross-entropy. Broadcasts like
    ``observation.log_likelihood`` (e.g. K decodings against one image batch).
    """
    return -observation.log_likelihood(x, params, pad, likelihood)


def kl_loss(z_mean, z_log_var):
    """Analytic KL(q(z|x) || N(0, I)) summed over latent dimensions: (batch,) nats."""
    return ops.sum(kl_per_dimension(z_mean, z_log_var), axis=-1)


def kl_per_dimension(z_mean, z_log_var):
    """Analytic KL per latent dimension: (batch, latent_dim) nats."""
    return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def vae_loss(x, params, z_mean, z_log_var, beta=1.0, pad=PAD, likelihood=DEFAULT_LIKELIHOOD):
    """Named per-image terms of the negative ELBO: ``loss = reconstruction_loss + beta * kl_loss``."""
    rec = reconstruction_loss(x, params, pad, likelihood)
    kl = kl_loss(z_mean, z_log_var)
    return {"loss": rec + beta * kl, "reconstruction_loss": rec, "kl_loss": kl}


def kl_weight(epoch, beta=1.0, warmup_epochs=0):
    """The KL term's weight in epoch ``epoch`` (0-based): ``beta``, reached linearly from 0 over ``warmup_epochs``.

    A function of the epoch alone (a Python int or a tensor), so a resumed run follows the same
    curve. With no warm-up it is ``beta`` itself, a Python float.
    """
    if warmup_epochs <= 0:
        return beta
    return beta * ops.minimum(1.0, ops.cast(epoch, "float32") / float(warmup_epochs))


class KLSchedule:
    """The KL term's weight as a function of the optimizer's step, as a learning-rate schedule is.

    ``beta``, reached linearly from 0 over ``warmup_epochs`` whole epochs of ``steps_per_epoch``
    steps (``kl_weight`` of the step's epoch): a function of the step alone, so a resumed run
    follows the same curve.
    """

    def __init__(self, beta=1.0, warmup_epochs=0, steps_per_epoch=None):
        if warmup_epochs > 0 and not steps_per_epoch:
            raise ValueError("a KL warm-up counts epochs of steps: give steps_per_epoch")
        self.beta, self.warmup_epochs, self.steps_per_epoch = float(beta), int(warmup_epochs), steps_per_epoch

    def __call__(self, step):
        """The weight at optimizer step ``step`` (a Python int or a tensor)."""
        if self.warmup_epochs <= 0:
            return self.beta
        return self.at_epoch(ops.floor_divide(step, self.steps_per_epoch))

    def at_epoch(self, epoch):
        """The weight all through epoch ``epoch`` (0-based)."""
        return kl_weight(epoch, self.beta, self.warmup_epochs)


def free_bits_kl(kl_dims, free_bits):
    """The free-bits KL term of a batch (Kingma et al., 2016): sum_d max(free_bits, mean_batch KL_d), a scalar.

    A dimension whose batch-averaged KL is below ``free_bits`` nats costs a constant, so the
    optimiser gains nothing by collapsing it further; above it the gradient is the usual one.
    """
    return ops.sum(ops.maximum(ops.mean(kl_dims, axis=0), free_bits))


LOG_2PI = 1.8378770664093453  # log(2 pi)


def gaussian_log_prob(z, mean, log_var):
    """log N(z; mean, diag(exp(log_var))) summed over the last axis; broadcasts leading axes."""
    return -0.5 * ops.sum(LOG_2PI + log_var + ops.square(z - mean) * ops.exp(-log_var), axis=-1)


def standard_normal_log_prob(z):
    """log N(z; 0, I) summed over the last axis: the prior's log-density."""
    return -0.5 * ops.sum(LOG_2PI + ops.square(z), axis=-1)
