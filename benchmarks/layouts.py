"""Layouts within the seed's description, a few epochs each: test loss after every epoch against wall time.

    python benchmarks/layouts.py OUT --epochs 2 keras_io conv "conv:--learning-rate 0.002" slim_decoder ...

Each argument is ``LAYOUT`` or ``LAYOUT:FLAGS``: a registered ``--architecture`` (keras_io, conv, ...)
or one of the variants below, which this script registers for the length of its call, trained by
``train.train`` with the ``vae train`` FLAGS (float32 unless FLAGS say otherwise). The test split
is scored after each epoch by the benchmark-only ``harness.HeldOutCurve`` (float32, fixed
noise, its time off the clock). For choosing what time_to_quality.py then measures in full:
the runs are short, so they rank how fast layouts start, not where they end.
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

from harness import HeldOutCurve, machine, recipe_config

import keras
from keras import layers

from mnist_vae import models
from mnist_vae.data import load_splits
from mnist_vae.models.layers import as_float32
from mnist_vae.train import train


def slim_decoder(image_shape=(32, 32, 1), latent_dim=2, out_channels=None, pad=2, num_classes=0):
    """Half the conv decoder's widths with 4x4 kernels (no checkerboard overlap): 3.3M multiply-adds, not 7.4M."""
    height, width, channels = image_shape
    z = keras.Input(shape=(latent_dim,), name="z")
    h = layers.Dense((height // 4) * (width // 4) * 32, activation="relu")(z)
    h = layers.Reshape((height // 4, width // 4, 32))(h)
    h = layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2DTranspose(16, 4, strides=2, padding="same", activation="relu")(h)
    params = layers.Conv2DTranspose(out_channels or channels, 3, padding="same", name=models.OUTPUT_LAYER)(h)
    return keras.Model({"z": z}, as_float32(params), name="decoder")


VARIANTS = {
    # conv's encoder with a ReLU Dense 128 before the posterior's parameters
    "hidden128": models.Architecture(functools.partial(models.build_keras_io_encoder, hidden=128), models.build_conv_decoder),
    "slim_decoder": models.Architecture(models.build_conv_encoder, slim_decoder),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new folder for the runs and layouts.json")
    parser.add_argument("specs", nargs="+", help="LAYOUT or LAYOUT:FLAGS")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, help="train on the first N images (tests)")
    parser.add_argument("--test-limit", type=int, help="score the first N test images (tests)")
    args = parser.parse_args(argv)
    splits = load_splits("mnist", 5000, test_limit=args.test_limit)
    models.ARCHITECTURES.update(VARIANTS)  # for this call only
    try:
        return _run(args, splits)
    finally:
        for name in VARIANTS:
            models.ARCHITECTURES.pop(name, None)


def _run(args, splits):
    print(machine(), flush=True)
    results = {}
    for spec in args.specs:
        layout, _, flags = spec.partition(":")
        flags = f"--architecture {layout} --precision float32 --epochs {args.epochs} {flags}"
        config = recipe_config(flags, 0, args.limit)
        curve = HeldOutCurve(config, splits.test.images, time.perf_counter())
        train(config, args.out / f"run{len(results)}", verbose=0, callbacks=[curve])
        params = models.build_vae(image_shape=(32, 32, 1), latent_dim=config.latent_dim, architecture=layout, seed=0).count_params()
        results[spec] = {"flags": flags, "params": params, "curve": curve.curve}
        print(f"{spec}: {params:,} parameters; (seconds, test loss) after each epoch: {curve.curve}", flush=True)
    (args.out / "layouts.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
