"""The importance-weighted estimator against an exact log-likelihood, and its bound properties."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from mnist_vae import data, estimators, evaluate, inference, losses, models


@pytest.fixture(scope="module")
def one_d_model():
    """A VAE with a 1-D latent, trained briefly on real digits so q(z|x) is informative."""
    keras.utils.set_random_seed(0)
    images = data.load_splits("mnist", validation_size=100, limit=512).train.images
    vae = models.build_vae(latent_dim=1, seed=0)
    vae.compile(keras.optimizers.Adam(3e-3))
    vae.fit({"images": images}, batch_size=64, epochs=3, verbose=0)
    x = images[:8]
    exact = np.array([-exact_log_px(vae.decoder, xi) for xi in x])  # exact -log p(x), (8,)
    return vae, x, exact


def exact_log_px(decoder, x, lo=-10.0, hi=10.0, points=8001):
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) dz on a fine grid (1-D latent only)."""
    z = np.linspace(lo, hi, points, dtype="float32")[:, None]
    logits = decoder.predict({"z": z}, batch_size=4000, verbose=0)
    x_rep = np.repeat(x[None], points, axis=0)
    log_joint = -ops.convert_to_numpy(losses.reconstruction_loss(x_rep, logits)).astype(np.float64)
    log_joint += -0.5 * (math.log(2 * math.pi) + z[:, 0].astype(np.float64) ** 2)
    m = log_joint.max()
    return m + math.log(np.exp(log_joint - m).sum() * (hi - lo) / (points - 1))


@pytest.mark.slow
def test_quadrature_is_converged(one_d_model):
    vae, x, exact = one_d_model
    finer = -exact_log_px(vae.decoder, x[0], lo=-12.0, hi=12.0, points=24001)
    assert abs(finer - exact[0]) < 1e-3


@pytest.mark.slow
def test_iw_estimate_matches_exact_log_likelihood(one_d_model):
    vae, x, exact = one_d_model
    nll, _ = estimators.importance_weighted(vae, x, k=5000, batch_size=8, chunk_size=500)
    assert abs(float((nll - exact).mean())) < 0.05
    assert np.abs(nll - exact).max() < 0.15  # one image's Monte-Carlo error at K=5000


@pytest.mark.slow
def test_bound_tightens_with_k_and_stays_below_the_elbo(one_d_model):
    vae, x, exact = one_d_model
    gaps = {}
    for k in (1, 10, 1000):
        nll, reconstruction = estimators.importance_weighted(vae, x, k=k, batch_size=8, seed=1)
        gaps[k] = float((nll - exact).mean())
    # Measured here: mean gaps of ~2-4.5 nats (K=1), ~0.7-1.1 (K=10), ~0.01 (K=1000), depending on seed.
    assert gaps[1] > gaps[10] > abs(gaps[1000])
    assert abs(gaps[1000]) < 0.05
    z_mean, z_log_var = vae.encoder.predict({"images": x}, verbose=0)
    kl = ops.convert_to_numpy(losses.kl_loss(z_mean, z_log_var))
    negative_elbo = reconstruction + kl  # K=1000 Monte-Carlo reconstruction, analytic KL: (n,)
    assert (nll <= negative_elbo + 0.05).all()  # the IW bound is never looser than the ELBO


@pytest.mark.slow
def test_chunk_size_does_not_change_the_estimate(one_d_model):
    vae, x, _ = one_d_model
    results = [estimators.importance_weighted(vae, x, k=50, batch_size=8, chunk_size=c)[0]
               for c in (1, 7, 50)]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-6)


def test_active_units_and_bits_per_dim():
    z_mean = np.stack([np.linspace(-1, 1, 100), np.full(100, 0.3), 0.05 * np.sin(np.arange(100))], axis=1)
    np.testing.assert_array_equal(inference.active_units(z_mean), [True, False, False])
    assert estimators.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)


def test_dead_relu_units_are_the_ones_zero_on_every_image():
    vae = models.build_vae(latent_dim=2, architecture="keras_io", seed=0)
    (layer,) = [l for l in vae.encoder.layers if isinstance(l, keras.layers.Dense) and l.name not in ("z_mean", "z_log_var")]
    kernel, bias = (np.array(w) for w in layer.get_weights())
    kernel[:] = 0.0
    bias[:5] = -1.0  # five units that never fire
    bias[5:] = 1e-3  # eleven that always do, however little
    layer.set_weights([kernel, bias])
    x = data.load_splits("mnist", validation_size=100, limit=1).test.images[:64]
    assert inference.dead_relu_units(vae.encoder, x) == {layer.name: (5, 16)}
    # A unit that fires for one image only is alive.
    kernel[:, 0] = np.random.default_rng(0).standard_normal(kernel.shape[0])
    features = keras.Model(vae.encoder.input, layer.input).predict({"images": x}, verbose=0) @ kernel[:, 0]
    bias[0] = -np.sort(features)[-2] - 1e-6 * abs(np.sort(features)[-2])  # just below the largest: one image fires
    layer.set_weights([kernel, bias])
    assert inference.dead_relu_units(vae.encoder, x) == {layer.name: (4, 16)}


def test_evaluate_command_writes_evaluation_json(trained_run, tmp_path):
    import json
    import shutil

    from conftest import run_cli

    source, _ = trained_run
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    result = run_cli("evaluate", out, "--iw-samples", "20", "--limit", "50", "--chunk-size", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IW-NLL" in result.stdout and "bits/dim" in result.stdout
    report = json.loads((out / "evaluation.json").read_text())
    assert (report["split"], report["images"], report["iw_samples"], report["dataset"]) == ("test", 50, 20, "mnist")
    assert report["iw_nll"] <= report["negative_elbo"] + 1.0  # a tighter bound, up to Monte-Carlo noise
    assert report["negative_elbo"] == pytest.approx(report["reconstruction_loss"] + report["kl_loss"])
    assert sum(c["images"] for c in report["per_class"].values()) == 50
    assert len(report["kl_per_dimension"]) == 2 and 0 <= report["active_units"] <= 2
    # The default conv encoder has no ReLU Dense layer to die (keras_io's bottleneck: the test below).
    assert report["dead_relu_units"] == {} and "dead ReLU units in" not in result.stdout
    assert "greyscale" in report["protocol"]


class _Interrupted(Exception):
    pass


_LOG_WEIGHTS = estimators.log_weights


def _counting_log_weights(monkeypatch, stop_after=None):
    """Patch ``estimators.log_weights`` to count its calls (one per chunk), raising after ``stop_after``."""
    calls = []
    real = _LOG_WEIGHTS  # not the attribute: it may be an earlier patch

    def counted(*args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise _Interrupted
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(estimators, "log_weights", counted)
    return calls


def test_an_interrupted_evaluation_continues_to_the_uninterrupted_numbers(trained_run, tmp_path, monkeypatch):
    import json
    import shutil

    source, _ = trained_run
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    shutil.copytree(source, whole)
    shutil.copytree(source, broken)
    args = dict(k=6, batch_size=10, chunk_size=3, limit=40)  # 4 batches of 2 chunks
    expected = evaluate.evaluate_run(whole, **args)

    calls = _counting_log_weights(monkeypatch, stop_after=5)  # killed in the third batch
    with pytest.raises(_Interrupted):
        evaluate.evaluate_run(broken, **args)
    assert (broken / "evaluation.partial.npz").exists() and not (broken / "evaluation.json").exists()

    calls = _counting_log_weights(monkeypatch)
    continued = evaluate.evaluate_run(broken, **args)
    assert len(calls) == 4  # batches 3 and 4 only: the first two came from the saved progress
    assert not (broken / "evaluation.partial.npz").exists()
    strip = lambda r: {key: value for key, value in r.items() if key not in ("seconds", "samples_per_second")}  # noqa: E731
    assert strip(continued) == strip(expected)
    assert strip(json.loads((broken / "evaluation.json").read_text())) == strip(expected)

    # Progress saved under other arguments (here another seed) is not used.
    calls = _counting_log_weights(monkeypatch, stop_after=3)
    with pytest.raises(_Interrupted):
        evaluate.evaluate_run(broken, **args)
    calls = _counting_log_weights(monkeypatch)
    other_seed = evaluate.evaluate_run(broken, **args, seed=1)
    assert len(calls) == 8 and other_seed["iw_nll"] != expected["iw_nll"]


def test_a_conditional_models_saved_progress_is_kept_per_label(tmp_path, monkeypatch):
    vae = models.build_vae(latent_dim=2, seed=0, num_classes=10)
    x = data.load_splits("mnist", validation_size=100, limit=1).test.images[:8]
    expected = [estimators.importance_weighted(vae, x, k=4, batch_size=4, labels=c) for c in range(3)]

    path = tmp_path / "evaluation.partial.npz"
    progress = evaluate.Progress(path, {"k": 4}, slots=3, n=len(x), save_every=0.0)
    _counting_log_weights(monkeypatch, stop_after=3)  # label 0 done, label 1 half done
    with pytest.raises(_Interrupted):
        for c in range(3):
            estimators.importance_weighted(vae, x, k=4, batch_size=4, labels=c, progress=progress, slot=c)
    progress = evaluate.Progress(path, {"k": 4}, slots=3, n=len(x))
    assert progress.done == pytest.approx(3 / 6)
    calls = _counting_log_weights(monkeypatch)
    got = [estimators.importance_weighted(vae, x, k=4, batch_size=4, labels=c, progress=progress, slot=c)
           for c in range(3)]
    assert len(calls) == 3
    for (nll, rec), (want_nll, want_rec) in zip(got, expected):
        np.testing.assert_array_equal(nll, want_nll)
        np.testing.assert_array_equal(rec, want_rec)
    assert evaluate.Progress(path, {"k": 5}, slots=3, n=len(x)).done == 0.0  # another key starts afresh


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "--iw-samples must be between 1 and 5,000"),
    ({"k": 6000}, "--iw-samples must be between 1 and 5,000"),
    ({"chunk_size": 0}, "--chunk-size must be between 1 and 5,000"),
    ({"split": "train"}, "--split must be one of"),
    ({"limit": 0}, "--limit must be between 1 and"),
    ({"seed": -5}, "--seed must be between 0 and 4,294,967,295"),
    ({"seed": 2**64}, "--seed must be between 0 and 4,294,967,295"),
    ({"batch_size": 1000, "chunk_size": 1000}, r"--batch-size x --chunk-size is at most 10,000"),
])
def test_evaluate_rejects_bad_arguments_before_writing(trained_run, kwargs, message):
    from mnist_vae.errors import UserError

    source, _ = trained_run
    with pytest.raises(UserError, match=message):
        evaluate.evaluate_run(source, **kwargs)
    assert not (source / "evaluation.json").exists()


def test_binarised_runs_train_and_evaluate_under_the_stated_protocol(tmp_path):
    import json

    from conftest import tiny_config
    from mnist_vae.train import train

    out = tmp_path / "run"
    metrics = train(tiny_config(binarize="dynamic"), out, verbose=0)
    assert metrics["binarize"] == "dynamic" and np.isfinite(metrics["test"]["loss"])
    report = evaluate.evaluate_run(out, k=5, limit=20)
    assert report["binarize"] == "dynamic" and "binarised once with seed" in report["protocol"]
    assert json.loads((out / "evaluation.json").read_text())["protocol"] == report["protocol"]


def test_autoregressive_decoders_are_scored_with_the_image_and_chunking_does_not_matter():
    vae = models.build_vae(latent_dim=3, architecture="resnet_ar", seed=0)
    x = (np.random.default_rng(0).random((4, 32, 32, 1)) < 0.3).astype("float32")
    a, rec_a = estimators.importance_weighted(vae, x, k=6, batch_size=4, chunk_size=6, seed=1)
    b, rec_b = estimators.importance_weighted(vae, x, k=6, batch_size=4, chunk_size=4, seed=1)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(rec_a, rec_b, rtol=1e-6)
    # The reconstruction term is log p(x|z) with the head reading x itself: flipping one pixel's
    # neighbourhood changes the score of later pixels, so it must differ from scoring a blank context.
    z = np.zeros((4, 3), "float32")
    with_x = losses.reconstruction_loss(x, vae.decoder({"z": z, "images": x}))
    blank = losses.reconstruction_loss(x, vae.decoder({"z": z, "images": np.zeros_like(x)}))
    assert not np.allclose(ops.convert_to_numpy(with_x), ops.convert_to_numpy(blank))


@pytest.mark.parametrize("num_classes, precision, pixel_layers",
                         [(0, "float32", None), (10, "float32", None), (0, "mixed_bfloat16", None), (0, "float32", 5)])
def test_the_scorer_runs_the_image_stage_once_and_equals_the_decoder_on_repeated_images(num_classes, precision,
                                                                                         pixel_layers):
    vae = models.build_vae(latent_dim=3, architecture="resnet_ar", seed=0, num_classes=num_classes,
                           precision=precision, pixel_layers=pixel_layers)
    k, b = 5, 3
    rng = np.random.default_rng(0)
    x = ops.convert_to_tensor((rng.random((b, 32, 32, 1)) < 0.3).astype("float32"))
    z = ops.convert_to_tensor(rng.standard_normal((k * b, 3)).astype("float32"))  # copy-major: draw j of image i at row j*b + i
    y = vae.one_hot(np.tile(np.arange(b), k)) if num_classes else None
    x_rep = ops.tile(x, (k, 1, 1, 1))
    want = ops.convert_to_numpy(vae.decoder(vae.decoder_inputs(z, x_rep, y)))
    scorer = models.AutoregressiveScorer(vae.decoder)
    calls = []
    stage = scorer.image_stage
    scorer.image_stage = lambda images: calls.append(images.shape[0]) or stage(images)
    got = ops.convert_to_numpy(scorer(vae.decoder_inputs(z, None, y, with_images=False), x, k))
    assert calls == [b]  # once per image, not per draw
    tolerance = 1e-5 if precision == "float32" else 2e-2  # the same bf16 ops, summed in another order
    np.testing.assert_allclose(got, want, atol=tolerance, rtol=tolerance)


def test_evaluation_precision_is_recorded_and_keys_the_saved_progress(trained_run, tmp_path):
    import shutil

    source, _ = trained_run
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    full = evaluate.evaluate_run(out, k=8, limit=20)
    half = evaluate.evaluate_run(out, k=8, limit=20, precision="mixed_bfloat16")
    assert (full["precision"], half["precision"]) == ("float32", "mixed_bfloat16")
    assert full["samples_per_second"] > 0 and "images x samples per second" in evaluate.format_table(half)
    assert half["iw_nll"] != full["iw_nll"]  # bf16 really computed something else
    assert abs(half["iw_nll"] - full["iw_nll"]) < 1.0
    from mnist_vae.errors import UserError

    with pytest.raises(UserError, match="--precision must be one of"):
        evaluate.evaluate_run(out, k=8, limit=20, precision="float16")


@pytest.mark.slow
def test_the_literature_preset_trains_plots_and_evaluates(tmp_path):
    import json

    from conftest import run_cli

    out = tmp_path / "lit"
    result = run_cli("train", "--preset", "literature", "--out", out, "--test-limit", "500", "--limit", "256",
                     "--epochs", "2", "--validation-size", "500", "--latent-dim", "8", "--grid-size", "4", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert (config["architecture"], config["binarize"], config["lr_schedule"]) == ("resnet_ar", "dynamic", "cosine")
    for name in ("models/vae.keras", "models/decoder.keras", "plots/samples.png", "plots/manifold.png", "metrics.json"):
        assert (out / name).is_file(), name
    result = run_cli("evaluate", out, "--iw-samples", "5", "--limit", "20")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "evaluation.json").read_text())
    assert np.isfinite(report["iw_nll"]) and report["iw_nll"] <= report["negative_elbo"] + 1.0
