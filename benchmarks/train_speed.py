"""Training throughput of the seed model: this package's ``fit`` against a keras-io-style baseline.

The baseline is the classic Keras VAE example's recipe (a ``tf.GradientTape`` train step, numpy
arrays fed to ``fit``, the same layers) measured in the same process on the same images, so the
ratio column is comparable across machines. TensorFlow backend only (the baseline uses TF).

    python benchmarks/train_speed.py [--images 55000] [--repeats 2]
"""

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mnist_vae import data, models  # noqa: E402
from mnist_vae.config import Config  # noqa: E402
from mnist_vae.train import largest_divisor  # noqa: E402


def keras_io_baseline(image_shape, latent_dim=2):
    """The keras-io VAE: same encoder/decoder, loss in a GradientTape train_step (TF only)."""
    import tensorflow as tf

    class TapeVAE(keras.Model):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder

        def train_step(self, x):
            with tf.GradientTape() as tape:
                z_mean, z_log_var = self.encoder(x, training=True)
                z = z_mean + tf.exp(0.5 * z_log_var) * tf.random.normal(tf.shape(z_mean))
                logits = self.decoder(z, training=True)
                rec = tf.nn.sigmoid_cross_entropy_with_logits(labels=x[:, 2:-2, 2:-2], logits=logits[:, 2:-2, 2:-2])
                rec = tf.reduce_mean(tf.reduce_sum(rec, axis=(1, 2, 3)))
                kl = tf.reduce_mean(tf.reduce_sum(-0.5 * (1 + z_log_var - z_mean**2 - tf.exp(z_log_var)), axis=1))
                loss = rec + kl
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            return {"loss": loss}

    return TapeVAE(models.build_seed_encoder(image_shape, latent_dim), models.build_seed_decoder(image_shape, latent_dim))


def throughput(make_model, fit_kwargs, n_images, repeats, spe=1):
    """Images per second of ``fit`` (after one warm-up epoch), one value per repeat."""
    model = make_model()
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=spe)
    model.fit(epochs=1, verbose=0, **fit_kwargs)  # tracing and warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(epochs=1, verbose=0, **fit_kwargs)
        rates.append(n_images / (time.perf_counter() - start))
    return rates


def main():
    """Print a table of img/s (median of repeats) and ratios against the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=55000, help="training images per epoch (55,000 = full MNIST)")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per variant, after one warm-up")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x = data.load_splits("mnist", limit=args.images).train.images
    shape = x.shape[1:]
    spe = largest_divisor(math.ceil(len(x) / 128), Config().steps_per_execution)
    rows = [
        ("keras-io GradientTape, numpy arrays (baseline)",
         lambda: keras_io_baseline(shape), dict(x=x, batch_size=128, shuffle=True), 1),
        ("mnist-vae fit, steps_per_execution=1",
         lambda: models.build_vae(shape, seed=0), dict(x=data.ImageBatches(x, 128, shuffle=True), shuffle=False), 1),
        (f"mnist-vae fit, steps_per_execution={spe} (default)",
         lambda: models.build_vae(shape, seed=0), dict(x=data.ImageBatches(x, 128, shuffle=True), shuffle=False), spe),
    ]
    results = [(name, throughput(make, kw, len(x), args.repeats, spe)) for name, make, kw, spe in rows]
    base = statistics.median(results[0][1])
    print(f"backend {keras.backend.backend()}, {len(x)} images/epoch, batch 128, median of {args.repeats} epochs\n")
    print(f"| {'variant':<48} | img/s (median) | range | vs baseline |")
    print(f"| {'-' * 48} | ---: | --- | ---: |")
    for name, rates in results:
        med = statistics.median(rates)
        print(f"| {name:<48} | {med:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
