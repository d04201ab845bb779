"""The conditional VAE: the label reaches encoder and decoder in every architecture, and the CLI end to end."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import run_cli
from mnist_vae import data, estimators, inference, models
from mnist_vae.config import Config
from mnist_vae.errors import UserError


def _binary(n, seed=0):
    return (np.random.default_rng(seed).random((n, 32, 32, 1)) < 0.3).astype("float32")


@pytest.mark.parametrize("architecture", sorted(models.ARCHITECTURES))
def test_the_label_enters_encoder_and_decoder_and_survives_a_reload(architecture, tmp_path):
    vae = models.build_vae(latent_dim=3, architecture=architecture, seed=0, num_classes=10)
    assert vae.conditional and [t.name for t in vae.encoder.inputs][-1].startswith("labels")
    x = keras.ops.convert_to_tensor(_binary(4))
    z = keras.ops.convert_to_tensor(np.random.default_rng(1).standard_normal((4, 3)).astype("float32"))
    one, two = vae.one_hot([1, 1, 1, 1]), vae.one_hot([2, 2, 2, 2])
    enc = [keras.ops.convert_to_numpy(vae.encoder(vae.encoder_inputs(x, y))[0]) for y in (one, two)]
    dec = [keras.ops.convert_to_numpy(vae.decoder(vae.decoder_inputs(z, x, y))) for y in (one, two)]
    assert not np.allclose(*enc) and not np.allclose(*dec), "the label changes q(z|x,y) and p(x|z,y)"
    vae.compile(keras.optimizers.Adam(1e-3))
    vae.train_on_batch(vae.model_inputs(x, np.array([0, 1, 2, 3])))
    vae.save(tmp_path / "vae.keras")
    np.save(tmp_path / "x.npy", keras.ops.convert_to_numpy(x))
    np.save(tmp_path / "expected.npy", keras.ops.convert_to_numpy(vae.decoder(vae.decoder_inputs(z, x, two))))
    script = textwrap.dedent(f"""
        import numpy as np, keras, mnist_vae
        d = {str(tmp_path)!r}
        vae = keras.saving.load_model(d + "/vae.keras", safe_mode=True)
        assert vae.num_classes == 10 and vae.conditional
        z = keras.ops.convert_to_tensor(np.array({keras.ops.convert_to_numpy(z).tolist()!r}, "float32"))
        x = keras.ops.convert_to_tensor(np.load(d + "/x.npy"))
        out = vae.decoder(vae.decoder_inputs(z, x, vae.one_hot([2, 2, 2, 2])))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), np.load(d + "/expected.npy"))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_autoregressive_conditional_sampling_matches_the_full_decoder():
    vae = models.build_vae(latent_dim=3, architecture="resnet_ar", seed=0, num_classes=10)
    z = np.random.default_rng(1).standard_normal((2, 3)).astype("float32")
    labels = np.array([3, 7])
    means = inference.decode(vae, z, labels, seed=4)
    uniforms = np.random.default_rng([4, 2]).random((2, 28, 28, 1), dtype=np.float32)
    x = np.pad((uniforms < means).astype("float32"), ((0, 0), (2, 2), (2, 2), (0, 0)))
    logits = keras.ops.convert_to_numpy(vae.decoder(vae.decoder_inputs(z, x, np.eye(10, dtype="float32")[labels])))[:, 2:30, 2:30]
    np.testing.assert_allclose(means, 1 / (1 + np.exp(-logits)), atol=1e-5)


def test_the_marginal_likelihood_combines_the_per_label_bounds():
    vae = models.build_vae(latent_dim=2, seed=0, num_classes=10)
    x = data.load_splits("mnist", validation_size=100, limit=1).test.images[:6]
    per_label = np.stack([estimators.importance_weighted(vae, x, k=20, batch_size=6, labels=c)[0] for c in range(10)])
    marginal = -(np.logaddexp.reduce(-per_label, axis=0) - np.log(10))
    # p(x) = mean_y p(x|y): never below the smallest -log p(x|y) minus nothing, nor above it plus log 10.
    assert (marginal >= per_label.min(axis=0) - 1e-9).all() and (marginal <= per_label.min(axis=0) + np.log(10)).all()


@pytest.mark.slow
def test_cli_conditional_trains_plots_and_evaluates(tmp_path):
    out = tmp_path / "cvae"
    result = run_cli("train", "--conditional", "--out", out, "--test-limit", "500", "--limit", "256", "--epochs", "1",
                     "--validation-size", "500", "--grid-size", "4", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["conditional"] is True
    for name in ("samples", "analogies", "class_manifolds", "interpolation", "latent_scatter", "reconstructions"):
        assert (out / "plots" / f"{name}.png").is_file(), name
    assert not (out / "plots" / "manifold.png").exists()
    result = run_cli("evaluate", out, "--iw-samples", "4", "--limit", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "evaluation.json").read_text())
    assert report["conditional"] and "-log p(x|y)" in result.stdout
    # p(x) >= p(x|y_true) p(y_true): -log p(x) <= -log p(x|y) + log 10, image by image and so on average.
    assert report["iw_nll"] <= report["iw_nll_given_label"] + np.log(10) + 1e-6
    result = run_cli("plot", out, "--grid-size", "3")
    assert result.returncode == 0, result.stderr[-3000:]


def test_conditional_needs_a_labelled_dataset(monkeypatch):
    import dataclasses

    monkeypatch.setitem(data.DATASETS, "unlabelled", dataclasses.replace(data.DATASETS["mnist"], class_names=()))
    with pytest.raises(UserError, match="--conditional needs class labels, and --dataset unlabelled has none"):
        Config(dataset="unlabelled", conditional=True).validate()
