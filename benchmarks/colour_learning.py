"""How fast does a colour MNIST model start learning? Validation bits/dim after each short epoch.

    python benchmarks/colour_learning.py seed resnet seed:-3

Each argument is an architecture, optionally with ``:B`` to start the decoder's log-scale output
biases at B (narrower logistics). 2,048 training images, batch 128, 10 epochs of 16 steps, Adam
1e-3, 16 latents, seed 0; validation -ELBO on 500 images, in bits per sub-pixel. A diagnostic
behind BENCHMARKS.md's colour section, not a training recipe.
"""

import sys
import time

import keras
import numpy as np

from mnist_vae.data import load_splits
from mnist_vae.evaluate import bits_per_dim, evaluate_losses
from mnist_vae.models import build_vae
from mnist_vae.observation import COLOUR_32, get_likelihood


def main(variants):
    splits = load_splits("colour_mnist", 5000, limit=2048)
    validation = splits.validation.images[:500]
    mixture = get_likelihood("logistic_mixture")
    k, c = mixture.components, COLOUR_32.channels
    for variant in variants:
        architecture, _, bias = variant.partition(":")
        keras.utils.set_random_seed(0)
        vae = build_vae(COLOUR_32.model_shape, 16, architecture, seed=0, likelihood="logistic_mixture", pad=0)
        if bias:
            # Output channels are [mixture logits (k), locations (k c), log scales (k c), coefficients]:
            # see DiscretizedLogisticMixture.split.
            layer = vae.decoder.get_layer("logits")
            values = np.zeros(layer.bias.shape, "float32")
            values[k + k * c:k + 2 * k * c] = float(bias)
            layer.bias.assign(values)
        vae.steps_per_epoch = 16
        vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        start, curve = time.perf_counter(), []
        for _ in range(10):
            vae.fit(splits.train.images, batch_size=128, epochs=1, verbose=0, shuffle=True)
            nats = evaluate_losses(vae, validation, 250)["loss"]
            curve.append(round(float(bits_per_dim(nats, COLOUR_32.scored_dims)), 3))
        print(f"{variant}: validation -ELBO bits/dim after each epoch {curve} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["seed"])
