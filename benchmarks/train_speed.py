"""Training throughput of the seed model: this package's ``fit`` against a keras-io-style baseline.

The baseline is the classic Keras VAE example's recipe (a ``tf.GradientTape`` train step, numpy
arrays fed to ``fit``, the same layers) measured in the same process on the same images, so the
ratio column is comparable across machines. TensorFlow backend only (the baseline uses TF).

    python benchmarks/train_speed.py [--images 16384] [--repeats 5]
"""

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from mnist_vae import data, models  # noqa: E402
from mnist_vae.config import Config  # noqa: E402
from mnist_vae.precision import resolve_precision  # noqa: E402
from mnist_vae.train import largest_divisor  # noqa: E402

from compare import keras_io_reference  # noqa: E402  (benchmarks/, this script's folder)


def keras_io_baseline(image_shape, latent_dim=2):
    """The keras-io VAE: same encoder/decoder, loss in a GradientTape train_step (TF only), on the logits."""
    return keras_io_reference(image_shape, latent_dim, on_probabilities=False)


def prepared(make_model, fit_kwargs, spe):
    """A compiled model that has run one warm-up epoch (tracing excluded from timings)."""
    model = make_model()
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=spe)
    model.fit(epochs=1, verbose=0, **fit_kwargs)
    return model


def timed_epoch(model, fit_kwargs, n_images):
    """Images per second of one ``fit`` epoch."""
    start = time.perf_counter()
    model.fit(epochs=1, verbose=0, **fit_kwargs)
    return n_images / (time.perf_counter() - start)


def main():
    """Print a table of img/s (median of repeats) and ratios against the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16384, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant, after one warm-up")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x = data.load_splits("mnist", limit=args.images).train.images
    shape = x.shape[1:]
    spe = largest_divisor(math.ceil(len(x) / 128), Config().steps_per_execution)
    ours = dict(x=data.keras_input(data.ImageBatches(x, 128, shuffle=True)), shuffle=False)  # as `vae train` feeds fit
    rows = [
        ("keras-io GradientTape, numpy arrays (baseline)",
         lambda: keras_io_baseline(shape), dict(x=x, batch_size=128, shuffle=True), 1),
        ("mnist-vae fit, float32, steps_per_execution=1",
         lambda: models.build_vae(image_shape=shape, seed=0), ours, 1),
        (f"mnist-vae fit, float32, steps_per_execution={spe}",
         lambda: models.build_vae(image_shape=shape, seed=0), ours, spe),
        (f"mnist-vae fit, mixed_bfloat16, steps_per_execution={spe}",
         lambda: models.build_vae(image_shape=shape, seed=0, precision="mixed_bfloat16"), ours, spe),
    ]
    # This VM's speed drifts between phases up to ~1.6x apart, so variants take turns epoch by
    # epoch (each sees the same phases) and the best epoch is the headline number.
    ready = [(name, prepared(make, kw, spe), kw) for name, make, kw, spe in rows]
    rates = {name: [] for name, _, _ in ready}
    for _ in range(args.repeats):
        for name, model, kw in ready:
            rates[name].append(timed_epoch(model, kw, len(x)))
    base_best = max(rates[rows[0][0]])
    base_median = statistics.median(rates[rows[0][0]])
    print(f"backend {keras.backend.backend()}, {len(x)} images/epoch, batch 128, {args.repeats} interleaved epochs each; "
          f"--precision auto resolves to {resolve_precision('auto')} here\n")
    print(f"| {'variant':<48} | best img/s | median img/s | best vs baseline | median vs baseline |")
    print(f"| {'-' * 48} | ---: | ---: | ---: | ---: |")
    for name, values in rates.items():
        best, med = max(values), statistics.median(values)
        print(f"| {name:<48} | {best:,.0f} | {med:,.0f} | {best / base_best:.2f}x | {med / base_median:.2f}x |")


if __name__ == "__main__":
    main()
