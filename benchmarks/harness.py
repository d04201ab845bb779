"""What the benchmark scripts share: the machine they ran on, interleaved timing, and the reference models.

Every script prints ``machine()`` above its table: a number means little without the CPU that gave
it. ``interleaved`` times variants in turns. The references are what users would copy instead of
this package: the keras-io VAE example's recipe (``keras_io_reference``) and plain PyTorch
(``torch_reference``), on the seed's layers.
"""

import math
import os
import platform
import shlex
import time

import mnist_vae  # noqa: F401  before Keras: the package imports it with TensorFlow's start-up notices muted
from mnist_vae import models
from mnist_vae.cli import build_parser, config_from_args
from mnist_vae.estimators import evaluate_losses

import keras  # noqa: E402, I001

BATCH = 128
# The CPU flags the timings depend on: AVX2 and AVX-512 for float32, the bf16 ones for mixed_bfloat16.
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")


def machine():
    """This machine in one line: the CPU (name, family and model, vector flags), its cores and the Keras backend."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block says it for all
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:  # not Linux
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    where = f"family {info['cpu family']}, model {info['model']}; " if "cpu family" in info else ""
    flags = [flag for flag in VECTOR_FLAGS if flag in info.get("flags", "").split()]
    return (f"CPU {name} ({where}{' '.join(flags) or 'none of ' + ' '.join(VECTOR_FLAGS)}), "
            f"{os.cpu_count()} cores; Keras {keras.__version__}, backend {keras.backend.backend()}")


def interleaved(steps, repeats):
    """Seconds of every call: ``steps`` (name -> function of no arguments) taking turns, ``repeats`` rounds.

    This VM's speed drifts between phases up to about 1.6x apart, for minutes at a time, so the
    variants take turns call by call: each sees the same phases, and the calls of one round ran
    close together in time (``round_ratios`` pairs them).
    """
    seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def round_ratios(values, base):
    """Each round's images/s over the reference's in the same round.

    The rows of a round ran within a minute of each other, so a ratio inside a round pairs epochs
    that were more likely in the same phase of this VM's speed than epochs of different rounds are
    (the phases can still change between two epochs; the per-round table shows when they did).
    """
    return [value / reference for value, reference in zip(values, base)]


def keras_io_reference(image_shape, latent_dim=2):
    """The keras-io example's recipe: a GradientTape train step, a sigmoid output and cross-entropy on probabilities."""
    import tensorflow as tf

    def reconstruction_terms(x, logits):  # (b, 28, 28[, 1]) per-pixel cross-entropies of the scored pixels
        x, logits = x[:, 2:-2, 2:-2], logits[:, 2:-2, 2:-2]
        return keras.losses.binary_crossentropy(x, tf.sigmoid(logits))

    class KerasIoVAE(keras.Model):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder

        def train_step(self, x):
            x = x["images"] if isinstance(x, dict) else x  # the package's pipeline yields named inputs
            with tf.GradientTape() as tape:
                z_mean, z_log_var = self.encoder({"images": x}, training=True)
                z = z_mean + tf.exp(0.5 * z_log_var) * tf.random.normal(tf.shape(z_mean))
                bce = reconstruction_terms(x, self.decoder({"z": z}, training=True))
                reconstruction = tf.reduce_mean(tf.reduce_sum(bce, axis=tuple(range(1, len(bce.shape)))))
                kl = tf.reduce_mean(tf.reduce_sum(-0.5 * (1 + z_log_var - z_mean**2 - tf.exp(z_log_var)), axis=1))
                loss = reconstruction + kl
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            return {"loss": loss}

    return KerasIoVAE(models.build_keras_io_encoder(image_shape, latent_dim),
                      models.build_conv_decoder(image_shape, latent_dim))


def torch_reference(latent_dim=2):
    """The seed architecture in plain PyTorch (NCHW), with its Adam and one train step."""
    import torch
    from torch import nn

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(64 * 8 * 8, 16), nn.ReLU())
            self.z_mean, self.z_log_var = nn.Linear(16, latent_dim), nn.Linear(16, latent_dim)
            self.decoder = nn.Sequential(
                nn.Linear(latent_dim, 64 * 8 * 8), nn.ReLU(), nn.Unflatten(1, (64, 8, 8)),
                nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                nn.ConvTranspose2d(32, 1, 3, padding=1))

        def forward(self, x):
            h = self.encoder(x)
            z_mean, z_log_var = self.z_mean(h), self.z_log_var(h)
            z = z_mean + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)
            logits = self.decoder(z)[:, :, 2:-2, 2:-2]
            reconstruction = nn.functional.binary_cross_entropy_with_logits(
                logits, x[:, :, 2:-2, 2:-2], reduction="none").sum(dim=(1, 2, 3))
            kl = (-0.5 * (1 + z_log_var - z_mean**2 - torch.exp(z_log_var))).sum(dim=1)
            return (reconstruction + kl).mean()

    return TorchVAE()


def forward_macs(layer):
    """Multiply-adds of one image's forward pass through ``layer``: convolutions and dense layers, 0 for the rest."""
    if isinstance(layer, keras.layers.Conv2DTranspose):  # each input pixel scattered through the kernel
        h, w, c_in = layer.input.shape[1:]
        return h * w * c_in * math.prod(layer.kernel_size) * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        h, w, c_out = layer.output.shape[1:]
        return h * w * c_out * math.prod(layer.kernel_size) * layer.input.shape[-1]
    if isinstance(layer, keras.layers.Dense):
        return layer.input.shape[-1] * layer.units
    return 0


def train_flops_per_image(encoder, decoder):
    """3 x forward multiply-adds x 2 of the convolutions and dense layers (a training step's FLOPs, about)."""
    return 3 * 2 * sum(forward_macs(layer) for layer in [*encoder.layers, *decoder.layers])


def matmul_peak(dtype, n=2048, seconds=2.0):
    """Best GFLOP/s of n x n matrix products in ``dtype`` (TensorFlow, this machine's threads)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    tf.matmul(a, a).numpy()  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        tf.matmul(a, a).numpy()
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def held_out_loss(encoder, decoder, config, test_images):
    """Test -ELBO of these weights in float32, one posterior sample per image, the same noise every call."""
    scorer = models.build_vae(image_shape=test_images.shape[1:], latent_dim=config.latent_dim, architecture=config.architecture, seed=0)
    scorer.encoder.set_weights(encoder.get_weights())
    scorer.decoder.set_weights(decoder.get_weights())
    return evaluate_losses(scorer, test_images, 500)["loss"]


class HeldOutCurve(keras.callbacks.Callback):
    """Benchmark only: the test -ELBO after each epoch and the training wall time it was reached at."""

    def __init__(self, config, test_images, start):
        super().__init__()
        self.config, self.test_images = config, test_images
        self.start, self.excluded, self.curve = start, 0.0, []

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        loss = held_out_loss(self.model.encoder, self.model.decoder, self.config, self.test_images)
        self.curve.append((round(now - self.start - self.excluded, 2), round(loss, 3)))
        self.excluded += time.perf_counter() - now


def recipe_config(flags, seed, limit=None):
    """The Config ``vae train FLAGS --seed SEED`` would train, through the CLI's own mapping."""
    argv = ["train", *shlex.split(flags), "--seed", str(seed)] + (["--limit", str(limit)] if limit else [])
    return config_from_args(build_parser().parse_args(argv))
