"""Sample quality: a small CNN classifier per dataset, and what it says about a VAE's samples.

- Conditional models: the classifier's accuracy on class-conditional samples (does a "7" look like
  a 7?).
- Every model: the Fréchet distance (Heusel et al., 2017) between the classifier's penultimate
  features of samples and of the test set. The classifier is this package's, not Inception, so
  the numbers compare models on one dataset here, not with published FIDs. The training set's
  distance to the test set is printed beside it: no model's samples can be expected below it.
"""

import math
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

from mnist_vae import inference
from mnist_vae.data import default_cache_dir, held_out_images, load_splits
from mnist_vae.errors import UserError

FEATURES_LAYER = "features"  # the penultimate layer: the Fréchet distance is computed on its outputs
SAMPLES = 10_000  # samples scored, as the issue and the literature (10k FID) use


def build_classifier(image_shape, num_classes):
    """Two conv blocks (32, 64 filters), a 128-unit feature layer, dropout, softmax logits."""
    images = keras.Input(shape=image_shape, name="images")
    h = images
    for filters in (32, 64):
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Flatten()(h)
    features = layers.Dense(128, activation="relu", name=FEATURES_LAYER)(h)
    logits = layers.Dense(num_classes, name="logits")(layers.Dropout(0.4)(features))
    return keras.Model(images, logits, name="classifier")


def classifier_path(dataset, cache_dir=None):
    """Where ``vae classifier train`` saves, and ``vae evaluate --sample-quality`` looks for, a dataset's classifier."""
    return Path(cache_dir or default_cache_dir()) / "classifiers" / f"{dataset}.keras"


def train_classifier(dataset="mnist", out=None, epochs=8, batch_size=128, seed=0, data_dir=None, verbose="auto",
                     limit=None):
    """Train the classifier on all 60,000 training images (the first ``limit``: quick runs); returns (path, test accuracy)."""
    from mnist_vae.atomic import replace_atomically

    keras.utils.set_random_seed(seed)
    splits = load_splits(dataset, validation_size=1, data_dir=data_dir)  # train on (almost) everything
    out = Path(out) if out is not None else classifier_path(dataset)
    if out.exists() and not out.is_file():
        raise UserError(f"{out}: not a file; pass --out FILE.keras")
    if out.suffix != ".keras":
        raise UserError(f"{out}: a classifier is saved as a .keras file; pass --out FILE.keras")
    x = np.concatenate([splits.train.images, splits.validation.images])[:limit]
    y = np.concatenate([splits.train.labels, splits.validation.labels])[:limit]
    model = build_classifier(x.shape[1:], len(splits.spec.class_names))
    steps = epochs * math.ceil(len(x) / batch_size)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps, alpha=0.01)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, shuffle=True)
    accuracy = float(np.mean(predict_classes(model, splits.test.images) == splits.test.labels))
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(lambda tmp: model.save(tmp), out, suffix=".keras")
    return out, accuracy


def predict_classes(classifier, images, batch_size=1000):
    """Most likely class of each model-ready image: (n,) integers."""
    return np.argmax(classifier.predict(images, batch_size=batch_size, verbose=0), axis=-1)


def features(classifier, images, batch_size=1000):
    """Penultimate-layer features (n, 128) float64."""
    extractor = keras.Model(classifier.inputs, classifier.get_layer(FEATURES_LAYER).output)
    return np.asarray(extractor.predict(images, batch_size=batch_size, verbose=0), np.float64)


def frechet_distance(a, b):
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (n, d) and ``b`` (m, d).

    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)); the trace of the square root is the sum
    of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, so ``eigh``).
    """
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = float(np.sqrt(np.clip(cross, 0, None)).sum())
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def load_classifier(dataset, path=None):
    """The classifier saved for ``dataset`` (or at ``path``), with a clear error when there is none."""
    from mnist_vae.archive import load_model

    path = Path(path) if path is not None else classifier_path(dataset)
    if not path.is_file():
        raise UserError(f"{path}: no classifier for {dataset}; train one with `vae classifier train --dataset {dataset}`")
    return load_model(path, compile=False)


def sample_quality(vae, config, classifier, n=SAMPLES, seed=0, data_dir=None):
    """Accuracy of class-conditional samples (conditional models) and Fréchet distances; a JSON-able dict.

    Samples are decoded means (per-pixel probabilities for Bernoulli pixels, the means along one
    ancestral sample for ``resnet_ar``) of z from the prior, fixed by ``seed``.
    """
    start = time.perf_counter()
    splits = load_splits(config.dataset, config.validation_size, data_dir=data_dir)
    geometry = vae.geometry
    test = held_out_images(splits.test.images, config.binarize)
    z = inference.prior_noise(n, vae.latent_dim, seed)
    asked = np.arange(n) % vae.num_classes if vae.conditional else None
    samples = inference.decode(vae, z, asked, seed=seed)  # (n, h, w, c) in [0, 1], padding removed
    p = geometry.pad
    samples = np.pad(samples, ((0, 0), (p, p), (p, p), (0, 0)))  # the classifier sees model-ready images
    if samples.shape[1:] != classifier.inputs[0].shape[1:]:
        raise UserError(f"the classifier takes {tuple(classifier.inputs[0].shape[1:])} images, the model makes "
                        f"{samples.shape[1:]}; train a classifier for {config.dataset}")
    test_features = features(classifier, test)
    # As many training images as samples: the Fréchet distance's estimate depends on the set size.
    train_images = held_out_images(splits.train.images[:n], config.binarize)
    result = {
        "dataset": config.dataset,
        "samples": n,
        "seed": seed,
        "what": "decoded means of z ~ N(0, I)" + (", labels cycling through the classes" if vae.conditional else ""),
        "classifier_test_accuracy": float(np.mean(predict_classes(classifier, test) == splits.test.labels)),
        "frechet_distance": frechet_distance(features(classifier, samples), test_features),
        "frechet_distance_train_vs_test": frechet_distance(features(classifier, train_images), test_features),
    }
    if vae.conditional:
        result["conditional_sample_accuracy"] = float(np.mean(predict_classes(classifier, samples) == asked))
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def format_quality(result):
    """Plain-text summary of ``sample_quality``."""
    lines = [f"{result['dataset']}: {result['samples']:,} samples ({result['what']}), seed {result['seed']} "
             f"({result['seconds']} s); classifier test accuracy {result['classifier_test_accuracy']:.2%}",
             f"Fréchet distance in classifier features: {result['frechet_distance']:.3f} "
             f"(training images vs test: {result['frechet_distance_train_vs_test']:.3f}, the floor)"]
    if "conditional_sample_accuracy" in result:
        lines.append(f"conditional samples classified as their label: {result['conditional_sample_accuracy']:.2%}")
    return "\n".join(lines)
