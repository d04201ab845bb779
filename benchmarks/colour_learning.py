"""How fast does a colour MNIST model start learning? Validation bits/dim after each short epoch.

    python benchmarks/colour_learning.py keras_io resnet keras_io:log_scale_bias=-3
    python benchmarks/colour_learning.py --images 4096 keras_io keras_io:lr=3e-3 keras_io:beta=0 \\
        keras_io:free_bits=2 keras_io:components=1 keras_io:z_log_var_bias=-6

Each argument is an architecture, optionally followed by ``:name=value,...`` changes to the recipe:
``lr``, ``beta``, ``free_bits``, ``components`` (of the logistic mixture), ``log_scale_bias`` (the
decoder's log-scale output biases at the start: narrower logistics) and ``z_log_var_bias`` (the
encoder's: smaller posterior variances at the start). Defaults: 2,048 training images, batch 128,
10 epochs (one pass over the images each: 16 steps), Adam 1e-3, 16 latents, float32, seed 0; validation -ELBO on 500 images, in
bits per sub-pixel. A diagnostic behind BENCHMARKS.md's colour section, not a training recipe; two
runs of one variant differ by a few tenths of a bit this early (threaded float sums).
"""

import argparse
import time

from harness import machine

import keras
import numpy as np

from mnist_vae.data import load_splits
from mnist_vae.estimators import bits_per_dim, evaluate_losses
from mnist_vae.models import OUTPUT_LAYER, build_vae
from mnist_vae.observation import COLOUR_32, get_likelihood

CHANGES = {"lr": float, "beta": float, "free_bits": float, "components": int, "log_scale_bias": float,
           "z_log_var_bias": float}


def parse_variant(text):
    """'keras_io:lr=3e-3,beta=0' -> ('keras_io', {'lr': 0.003, 'beta': 0.0})."""
    architecture, _, rest = text.partition(":")
    changes = {}
    for item in filter(None, rest.split(",")):
        name, _, value = item.partition("=")
        if name not in CHANGES:
            raise SystemExit(f"unknown change {name!r} in {text!r}; choose from {sorted(CHANGES)}")
        changes[name] = CHANGES[name](value)
    return architecture, changes


def run(variant, splits, epochs=10):
    architecture, changes = parse_variant(variant)
    mixture = get_likelihood("logistic_mixture")
    default_components = mixture.components
    mixture.components = changes.get("components", default_components)  # read when the decoder is built
    try:
        keras.utils.set_random_seed(0)
        vae = build_vae(image_shape=COLOUR_32.model_shape, latent_dim=16, architecture=architecture, seed=0,
                        likelihood="logistic_mixture", pad=0)
        k, c = mixture.components, COLOUR_32.channels
        if "log_scale_bias" in changes:
            # Output channels are [mixture logits (k), locations (k c), log scales (k c), coefficients]:
            # see DiscretizedLogisticMixture.split.
            layer = vae.decoder.get_layer(OUTPUT_LAYER)
            values = np.zeros(layer.bias.shape, "float32")
            values[k + k * c:k + 2 * k * c] = changes["log_scale_bias"]
            layer.bias.assign(values)
        if "z_log_var_bias" in changes:
            layer = vae.encoder.get_layer("z_log_var")
            layer.bias.assign(np.full(layer.bias.shape, changes["z_log_var_bias"], "float32"))
        vae.compile(optimizer=keras.optimizers.Adam(changes.get("lr", 1e-3)), kl_weight=changes.get("beta", 1.0),
                    free_bits=changes.get("free_bits", 0.0))
        validation = splits.validation.images[:500]
        start, curve = time.perf_counter(), []
        for _ in range(epochs):
            vae.fit({"images": splits.train.images}, batch_size=128, epochs=1, verbose=0, shuffle=True)
            nats = evaluate_losses(vae, validation, 250)["loss"]
            curve.append(round(float(bits_per_dim(nats, COLOUR_32.scored_dims)), 2))
    finally:
        mixture.components = default_components
    print(f"{variant}: validation -ELBO bits/dim after each epoch {curve} ({time.perf_counter() - start:.0f} s)",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=["keras_io"])
    parser.add_argument("--images", type=int, default=2048, help="training images; an epoch is one pass over them")
    args = parser.parse_args()
    for variant in args.variants:
        parse_variant(variant)  # every variant checked before the first trains
    splits = load_splits("colour_mnist", 5000, limit=args.images)
    print(machine(), flush=True)
    for variant in args.variants:
        run(variant, splits)


if __name__ == "__main__":
    main()
