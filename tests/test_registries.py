"""A dataset, a likelihood and an architecture are each one registry entry: toy ones train, save, reload, evaluate.

Each toy is added by ``monkeypatch.setitem`` on its registry alone (``data.DATASETS``,
``observation.LIKELIHOODS``, ``models.ARCHITECTURES``); nothing else in the package is touched.
"""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
from keras import layers, ops

from conftest import write_fake_dataset
from mnist_vae import data, models, observation
from mnist_vae.config import Config
from mnist_vae.evaluate import evaluate_run
from mnist_vae.models.layers import as_float32
from mnist_vae.archive import load_model
from mnist_vae.rundir import RunDir
from mnist_vae.train import train

SIGMA = 0.2  # the toy Gaussian's fixed standard deviation


class ToyGaussian:
    """A fixed-variance Gaussian on grey levels: the least a likelihood must say."""

    name = "toy_gaussian"
    autoregressive = False
    binarize = ("none",)
    bf16_parameters = False
    fix = "models grey levels; drop --binarize dynamic"

    def parameter_channels(self, channels):
        return channels

    def check(self, channels):
        return None

    def log_prob(self, x, params):
        return -0.5 * ops.square((ops.cast(x, params.dtype) - params) / SIGMA) - math.log(SIGMA * math.sqrt(2 * math.pi))

    def mean(self, params):
        return np.clip(ops.convert_to_numpy(params), 0.0, 1.0)

    def sample(self, params, uniforms):
        return self.mean(params)

    def uniforms_per_pixel(self, channels):
        return channels

    def protocol(self, binarize, seed, split):
        return f"toy Gaussian densities of the {split} grey levels"


def build_mlp_encoder(image_shape, latent_dim, num_classes=0):
    images = keras.Input(shape=image_shape, name="images")
    h = layers.Dense(32, activation="relu")(layers.Flatten()(images))
    return keras.Model({"images": images}, [layers.Dense(latent_dim, name="z_mean")(h),
                                            layers.Dense(latent_dim, name="z_log_var")(h)], name="encoder")


def build_mlp_decoder(image_shape, latent_dim, out_channels, pad, num_classes=0):
    z = keras.Input(shape=(latent_dim,), name="z")
    h = layers.Dense(int(np.prod(image_shape[:2])) * out_channels, name=models.OUTPUT_LAYER)(z)
    return keras.Model({"z": z}, as_float32(layers.Reshape((*image_shape[:2], out_channels))(h)), name="decoder")


@pytest.mark.slow
def test_a_toy_dataset_likelihood_and_architecture_each_by_one_registry_entry(tmp_path, monkeypatch):
    folder = tmp_path / "toy-files"
    sums = write_fake_dataset(folder, n_train=120, n_test=30)
    sizes = {name: (16 if "images" in name else 8) + (n * 784 if "images" in name else n)
             for name, n in (("train-images-idx3-ubyte", 120), ("train-labels-idx1-ubyte", 120),
                             ("t10k-images-idx3-ubyte", 30), ("t10k-labels-idx1-ubyte", 30))}
    monkeypatch.setitem(data.DATASETS, "toy", dataclasses.replace(
        data.DATASETS["mnist"], name="toy", sha256=sums, sizes=sizes, packaged=None, urls=()))
    monkeypatch.setitem(observation.LIKELIHOODS, "toy_gaussian", ToyGaussian())
    monkeypatch.setitem(models.ARCHITECTURES, "toy_mlp", models.Architecture(build_mlp_encoder, build_mlp_decoder))

    out = tmp_path / "run"
    config = Config(dataset="toy", architecture="toy_mlp", likelihood="toy_gaussian", epochs=2, batch_size=32,
                    validation_size=20, grid_size=3, precision="float32")
    metrics = train(config, out, data_dir=folder, verbose=0)
    assert metrics["likelihood"] == "toy_gaussian" and metrics["test_images"] == 30
    assert math.isfinite(metrics["test"]["loss"])

    vae = load_model(RunDir(out).vae)  # rebuilt from the ModelConfig saved inside the file
    assert (vae.config.architecture, vae.config.likelihood) == ("toy_mlp", "toy_gaussian")
    result = evaluate_run(out, k=4, limit=10, data_dir=folder)
    assert result["protocol"] == "toy Gaussian densities of the test grey levels"
    assert math.isfinite(result["iw_nll"]) and result["iw_nll"] <= result["negative_elbo"] + 1e-3 and json.loads((out / "evaluation.json").read_text())["iw_samples"] == 4


def test_an_architecture_whose_models_do_not_take_named_inputs_is_refused(monkeypatch):
    def positional_encoder(image_shape, latent_dim, num_classes=0):
        images = keras.Input(shape=image_shape)
        h = layers.Flatten()(images)
        return keras.Model(images, [layers.Dense(latent_dim)(h), layers.Dense(latent_dim)(h)], name="encoder")

    monkeypatch.setitem(models.ARCHITECTURES, "positional", models.Architecture(positional_encoder, build_mlp_decoder))
    with pytest.raises(ValueError, match=r"its encoder must take the named inputs \['images'\] \(a dict\)"):
        models.build_vae(architecture="positional", latent_dim=2)
