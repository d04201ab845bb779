"""Whole-length epochs with and without tf.data's autotuner: how often an epoch's end stalls.

    python benchmarks/epoch_stalls.py [--images 55000] [--epochs 4] [--rounds 2]

On TensorFlow, Keras feeds ``fit`` through a tf.data pipeline and opens a new iterator every
epoch; deleting one waits for the autotuner's thread, which sleeps in periods that double from
10 ms and is not always woken, so an epoch can end idle at 2.56, 5.12, 10.24, 20.47 or 40.95 s
after its iterator began (``data.keras_input``, which this package's ``fit`` input goes through,
turns the autotuner off). Each round runs one ``fit`` of ``--epochs`` epochs per row, in turns:

- the keras-io-style reference (``harness.keras_io_reference``) fed NumPy arrays, as the keras-io
  example feeds it, and the same fed ``data.keras_input``;
- this package's default precision on the keras_io layers fed its ``ImageBatches`` as a plain
  PyDataset (Keras' pipeline, autotuner on: what ``vae train`` once did), and through
  ``data.keras_input``.

Prints every epoch's seconds (from ``on_epoch_begin`` to ``on_epoch_end``) and each row's mean of
the epochs after the first of each ``fit`` (the first traces the step). TensorFlow backend only.
"""

import argparse
import math
import statistics

from harness import BATCH, keras_io_reference, machine

import keras

from mnist_vae import data, models
from mnist_vae.callbacks import EpochTimer
from mnist_vae.config import Config
from mnist_vae.precision import resolve_precision
from mnist_vae.train import largest_divisor


def rows(x):
    """(name, model factory, steps_per_execution, fit inputs factory) of every row."""
    shape = x.shape[1:]
    spe = largest_divisor(math.ceil(len(x) / BATCH), Config().steps_per_execution)
    auto = resolve_precision("auto")

    def ours():
        return models.build_vae(image_shape=shape, seed=0, precision=auto)

    def batches():
        return data.ImageBatches(x, BATCH, shuffle=True)

    return [
        ("keras-io-style reference, NumPy arrays", lambda: keras_io_reference(shape), 1,
         lambda: dict(x=x, batch_size=BATCH, shuffle=True)),
        ("keras-io-style reference, data.keras_input", lambda: keras_io_reference(shape), 1,
         lambda: dict(x=data.keras_input(batches()), shuffle=False)),
        (f"mnist-vae ({auto}, keras_io layers), ImageBatches as a PyDataset", ours, spe,
         lambda: dict(x=batches(), shuffle=False)),
        (f"mnist-vae ({auto}, keras_io layers), data.keras_input", ours, spe,
         lambda: dict(x=data.keras_input(batches()), shuffle=False)),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=55000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit (at least 2: the first traces)")
    parser.add_argument("--rounds", type=int, default=2, help="fits per row, taking turns")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x = data.load_splits("mnist", limit=args.images).train.images
    seconds = {}
    for _ in range(args.rounds):
        for name, make, spe, inputs in rows(x):
            model = make()
            model.compile(keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=spe)
            # `vae train`'s own clock: each epoch's seconds in the history as ``epoch_seconds``.
            history = model.fit(epochs=args.epochs, verbose=0, callbacks=[EpochTimer()], **inputs())
            seconds.setdefault(name, []).append(history.history["epoch_seconds"])
    print(machine())
    print(f"{len(x)} images per epoch, batch {BATCH}, {args.rounds} fits of {args.epochs} epochs per row, in turns\n")
    print("| row | seconds of each epoch, fit by fit | mean of the later epochs | images/s |")
    print("| --- | --- | ---: | ---: |")
    for name, fits in seconds.items():
        later = [s for fit in fits for s in fit[1:]]
        mean = statistics.mean(later) if later else float("nan")
        shown = "; ".join(", ".join(f"{s:.2f}" for s in fit) for fit in fits)
        print(f"| {name} | {shown} | {mean:.2f} | {len(x) / mean:,.0f} |")
    return seconds


if __name__ == "__main__":
    main()
