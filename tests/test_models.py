"""Model shapes, the exact seed architecture, training/evaluation steps, serialisation."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from mnist_vae import models
from mnist_vae.errors import UserError
from mnist_vae.archive import load_model


def _batch(n=8, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 32, 32, 1)).astype("float32")


def test_shapes_for_several_latent_sizes():
    for latent_dim in (1, 2, 5):
        vae = models.build_vae(latent_dim=latent_dim, seed=0)
        out = vae({"images": _batch(3)})
        assert tuple(out["params"].shape) == (3, 32, 32, 1)
        assert tuple(out["z_mean"].shape) == (3, latent_dim)
        assert tuple(out["z_log_var"].shape) == (3, latent_dim)
        assert vae.latent_dim == latent_dim and vae.image_shape == (32, 32, 1)


def _describe(model):
    """(layer type, filters or units, strides, activation) of every layer after the input."""
    return [
        (type(l).__name__, getattr(l, "filters", None) or getattr(l, "units", None),
         getattr(l, "strides", None), getattr(getattr(l, "activation", None), "__name__", None))
        for l in model.layers[1:]
    ]


def test_exact_seed_architecture():
    encoder = models.build_keras_io_encoder(latent_dim=2)
    assert _describe(encoder) == [
        ("Conv2D", 32, (2, 2), "relu"), ("Conv2D", 64, (2, 2), "relu"), ("Flatten", None, None, None),
        ("Dense", 16, None, "relu"), ("Dense", 2, None, "linear"), ("Dense", 2, None, "linear"),
    ]
    assert [encoder.get_layer(n).output for n in ("z_mean", "z_log_var")] == list(encoder.outputs)
    decoder = models.build_conv_decoder(latent_dim=2)
    assert _describe(decoder) == [
        ("Dense", 8 * 8 * 64, None, "relu"), ("Reshape", None, None, None),
        ("Conv2DTranspose", 64, (2, 2), "relu"), ("Conv2DTranspose", 32, (2, 2), "relu"),
        ("Conv2DTranspose", 1, (1, 1), "linear"),  # logits: no sigmoid in the model
        ("Identity", None, None, None),  # the float32 cast of the logits (models.as_float32)
    ]
    # conv 3*3*1*32+32, conv 3*3*32*64+64, dense 4096*16+16, two heads 16*2+2
    assert encoder.count_params() == 320 + 18496 + 65552 + 34 + 34
    # dense 2*4096+4096, convT 3*3*64*64+64, convT 3*3*64*32+32, convT 3*3*32*1+1
    assert decoder.count_params() == 12288 + 36928 + 18464 + 289


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture 'big'"):
        models.build_vae(architecture="big")


def test_sampling_is_seeded_and_has_the_right_moments():
    z_mean = np.full((20000, 2), [1.0, -2.0], "float32")
    z_log_var = np.full((20000, 2), [0.0, np.log(4.0)], "float32")
    a = keras.ops.convert_to_numpy(models.Sampling(seed=7)([z_mean, z_log_var]))
    b = keras.ops.convert_to_numpy(models.Sampling(seed=7)([z_mean, z_log_var]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(a.std(axis=0), [1.0, 2.0], atol=0.05)


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("precision", models.PRECISIONS)
def test_a_train_step_changes_weights_and_an_evaluation_step_does_not(precision):
    vae = models.build_vae(seed=0, precision=precision)
    vae.compile(keras.optimizers.Adam(1e-3))
    x = _batch(16)
    before = _weights(vae)
    logs = vae.test_on_batch({"images": x}, return_dict=True)
    assert set(logs) >= {"loss", "reconstruction_loss", "kl_loss"}
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(vae)))
    np.testing.assert_allclose(logs["loss"], logs["reconstruction_loss"] + logs["kl_loss"], rtol=1e-5)
    vae.train_on_batch({"images": x})
    after = _weights(vae)
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert all(changed), "every kernel and bias receives a gradient"


def test_config_round_trip_rebuilds_the_same_model():
    vae = models.build_vae(latent_dim=3, seed=5)
    clone = models.VAE.from_config(json.loads(json.dumps(vae.get_config())))
    clone({"images": _batch(1)})
    clone.set_weights(vae.get_weights())
    x = _batch(4)
    np.testing.assert_array_equal(vae.encoder.predict({"images": x}, verbose=0)[0], clone.encoder.predict({"images": x}, verbose=0)[0])
    assert clone.seed == 5 and clone.latent_dim == 3


@pytest.mark.parametrize("precision", models.PRECISIONS)
def test_saved_models_reload_identically_in_a_fresh_process(precision, tmp_path):
    vae = models.build_vae(seed=3, precision=precision)
    vae.compile(keras.optimizers.Adam(1e-3))
    vae.fit({"images": _batch(64)}, batch_size=32, epochs=1, verbose=0)  # non-initial weights and optimizer state
    vae.save(tmp_path / "vae.keras")
    vae.encoder.save(tmp_path / "encoder.keras")
    vae.decoder.save(tmp_path / "decoder.keras")
    x = _batch(5, seed=9)
    np.save(tmp_path / "x.npy", x)
    expected = {
        "z_mean": vae.encoder.predict({"images": x}, verbose=0)[0],
        "decoded": vae.decoder.predict({"z": np.array([[0.3, -1.0]], "float32")}, verbose=0),
        "vae_logits": keras.ops.convert_to_numpy(vae({"images": x})["params"]),  # the next sample of the saved RNG state
    }
    # Reload in another interpreter: only `import mnist_vae`, no custom_objects, safe_mode on.
    script = textwrap.dedent(f"""
        import numpy as np, keras, mnist_vae
        d = {str(tmp_path)!r}
        x = np.load(d + "/x.npy")
        vae = keras.saving.load_model(d + "/vae.keras", safe_mode=True)
        enc = keras.saving.load_model(d + "/encoder.keras", safe_mode=True)
        dec = keras.saving.load_model(d + "/decoder.keras", safe_mode=True)
        np.save(d + "/z_mean.npy", enc.predict({{"images": x}}, verbose=0)[0])
        np.save(d + "/decoded.npy", dec.predict({{"z": np.array([[0.3, -1.0]], "float32")}}, verbose=0))
        np.save(d + "/vae_logits.npy", keras.ops.convert_to_numpy(vae({{"images": x}})["params"]))
        assert type(vae).__name__ == "VAE" and vae.optimizer is not None
        # The training precision is saved with the layers; the output layers stay float32.
        assert dec.get_layer("params").dtype_policy.name == "float32"
        assert dec.layers[1].dtype_policy.name == {precision!r}, dec.layers[1].dtype_policy
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    for name, value in expected.items():
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), value, err_msg=name)


def test_a_file_that_is_not_a_model_gives_a_clear_error(tmp_path):
    bogus = tmp_path / "vae.keras"
    bogus.write_text("not a model")
    with pytest.raises(UserError, match="not a Keras model file"):
        load_model(bogus)
    with pytest.raises(UserError, match="model file not found"):
        load_model(tmp_path / "missing.keras")


TORCH_SCRIPT = """
import numpy as np, keras
assert keras.backend.backend() == "torch"
from mnist_vae import models
vae = models.build_vae(seed=0)
vae.compile(keras.optimizers.Adam(1e-3))
x = np.random.default_rng(0).uniform(size=(32, 32, 32, 1)).astype("float32")
before = [np.array(w) for w in vae.get_weights()]
logs = vae.fit({"images": x}, batch_size=16, epochs=1, verbose=0).history
after = [np.array(w) for w in vae.get_weights()]
assert all(not np.array_equal(a, b) for a, b in zip(before, after))
assert np.isfinite(logs["loss"][0]) and set(logs) >= {"loss", "reconstruction_loss", "kl_loss"}
# The autoregressive decoder (masked convolutions) trains there too.
ar = models.build_vae(latent_dim=4, architecture="resnet_ar", seed=0)
ar.compile(keras.optimizers.Adam(1e-3))
binary = (x > 0.5).astype("float32")
before = [np.array(w) for w in ar.get_weights()]
assert np.isfinite(ar.fit({"images": binary}, batch_size=16, epochs=1, verbose=0).history["loss"][0])
assert all(not np.array_equal(a, np.array(b)) for a, b in zip(before, ar.get_weights()))
# So does bf16 mixed precision (for GPUs, where torch is this package's backend).
mixed = models.build_vae(seed=0, precision="mixed_bfloat16")
mixed.compile(keras.optimizers.Adam(1e-3))
before = [np.array(w) for w in mixed.get_weights()]
assert np.isfinite(mixed.fit({"images": x}, batch_size=16, epochs=1, verbose=0).history["loss"][0])
assert all(not np.array_equal(a, np.array(b)) for a, b in zip(before, mixed.get_weights()))
print("torch ok", logs["loss"][0])
"""


@pytest.mark.slow
def test_the_same_training_step_runs_on_the_torch_backend():
    pytest.importorskip("torch")
    import os

    result = subprocess.run([sys.executable, "-c", TORCH_SCRIPT], env={**os.environ, "KERAS_BACKEND": "torch"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch ok" in result.stdout


def _binary(n=2, seed=0):
    return (np.random.default_rng(seed).random((n, 32, 32, 1)) < 0.5).astype("float32")


@pytest.mark.parametrize("pixel_layers", [2, 5])
def test_autoregressive_decoder_is_causal_in_raster_order(pixel_layers):
    decoder = models.build_resnet_ar_decoder(latent_dim=4, pixel_layers=pixel_layers)
    head = decoder.pixel_head
    assert sum(isinstance(layer, models.MaskedConv2D) for layer in head.layers) == 1 + pixel_layers
    assert head.rows_seen_above() == 3 + pixel_layers  # the 7x7 first layer, then one row per 3x3
    z = np.random.default_rng(0).standard_normal((1, 4)).astype("float32")
    x = _binary(1)
    base = keras.ops.convert_to_numpy(decoder({"z": z, "images": x}))[0, ..., 0]
    assert not base[:2].any() and not base[:, :2].any(), "padding logits are 0 (never scored)"
    for i, j in [(2, 2), (9, 17), (20, 29), (29, 28)]:
        flipped = x.copy()
        flipped[0, i, j, 0] = 1 - flipped[0, i, j, 0]
        changed = np.argwhere(np.abs(keras.ops.convert_to_numpy(decoder({"z": z, "images": flipped}))[0, ..., 0] - base) > 0)
        order = changed[:, 0] * 32 + changed[:, 1]
        assert (order > i * 32 + j).all(), f"pixel {(i, j)} influenced itself or an earlier pixel"
        if (i, j) != (29, 28):
            assert len(changed) > 0, "later pixels do depend on earlier ones"
    # The pixel after (29, 28) is (29, 29): it must see (29, 28).
    flipped = x.copy()
    flipped[0, 29, 28, 0] = 1 - flipped[0, 29, 28, 0]
    assert keras.ops.convert_to_numpy(decoder({"z": z, "images": flipped}))[0, 29, 29, 0] != base[29, 29]


@pytest.mark.slow
@pytest.mark.parametrize("pixel_layers", [None, 5])
def test_windowed_sampler_matches_the_full_decoder(pixel_layers):
    from mnist_vae import inference

    vae = models.build_vae(latent_dim=3, architecture="resnet_ar", seed=0, pixel_layers=pixel_layers)
    decoder = vae.decoder
    z = np.random.default_rng(1).standard_normal((3, 3)).astype("float32")
    means = inference.sample_autoregressive(vae, z, seed=4, batch_size=2)
    assert means.shape == (3, 28, 28, 1)
    # Rebuild the drawn pixels from the sampler's uniforms (batches of 2, then 1) and score them in one pass.
    rng = np.random.default_rng([4, 2])
    uniforms = np.concatenate([rng.random((2, 28, 28, 1), dtype=np.float32), rng.random((1, 28, 28, 1), dtype=np.float32)])
    x = np.pad((uniforms < means).astype("float32"), ((0, 0), (2, 2), (2, 2), (0, 0)))
    full = 1 / (1 + np.exp(-keras.ops.convert_to_numpy(decoder({"z": z, "images": x}))[:, 2:30, 2:30]))
    np.testing.assert_allclose(means, full, atol=1e-5)
    np.testing.assert_array_equal(means, inference.sample_autoregressive(vae, z, seed=4, batch_size=2))


@pytest.mark.parametrize("architecture", ["resnet", "resnet_ar"])
def test_stronger_architectures_train_and_reload_in_a_fresh_process(architecture, tmp_path):
    vae = models.build_vae(latent_dim=32, architecture=architecture, seed=1)
    assert not any(getattr(l, "units", None) == 16 for l in vae.encoder.layers), "no 16-unit bottleneck"
    vae.compile(keras.optimizers.Adam(1e-3))
    x = _binary(16)
    before = _weights(vae)
    vae.train_on_batch({"images": x})
    assert all(not np.array_equal(a, b) for a, b in zip(before, _weights(vae)))
    vae.save(tmp_path / "vae.keras")
    vae.decoder.save(tmp_path / "decoder.keras")
    np.save(tmp_path / "x.npy", x)
    z = np.zeros((16, 32), "float32")
    args = vae.decoder_inputs(z, x)
    np.save(tmp_path / "expected.npy", keras.ops.convert_to_numpy(vae.decoder(args)))
    script = textwrap.dedent(f"""
        import numpy as np, keras, mnist_vae
        d = {str(tmp_path)!r}
        x, z = np.load(d + "/x.npy"), np.zeros((16, 32), "float32")
        dec = keras.saving.load_model(d + "/decoder.keras", safe_mode=True)
        vae = keras.saving.load_model(d + "/vae.keras", safe_mode=True)
        assert vae.likelihood == {vae.likelihood!r} and vae.autoregressive == {vae.autoregressive!r}
        args = vae.decoder_inputs(z, x)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(dec(args)), np.load(d + "/expected.npy"))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(vae.decoder(args)), np.load(d + "/expected.npy"))
        assert type(dec).__name__ == "Part" and dec.config == vae.config  # rebuilt from the ModelConfig
        if vae.autoregressive:  # its parts are attributes
            assert type(dec.pixel_head).__name__ == "PixelHead"
            assert dec.pixel_head.rows_seen_above() == 5 and dec.features.output.shape[1:] == (28, 28, 32)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_head_depth_is_only_for_autoregressive_decoders():
    with pytest.raises(ValueError, match="no causal head"):
        models.build_vae(architecture="resnet", pixel_layers=3)
    # Unset is the head every resnet_ar run had before the field existed: the same weights.
    keras.utils.set_random_seed(0)  # weights are drawn from the global seed, as `vae train` sets it
    default = models.build_vae(latent_dim=3, architecture="resnet_ar", seed=0)
    keras.utils.set_random_seed(0)
    two = models.build_vae(latent_dim=3, architecture="resnet_ar", seed=0, pixel_layers=2)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(default), _weights(two)))


def _policies(model):
    return {layer.name: layer.dtype_policy.name for layer in models.inner_layers(model)
            if not isinstance(layer, (keras.Model, keras.layers.InputLayer, models.Sampling))}


@pytest.mark.parametrize("architecture", sorted(models.ARCHITECTURES))
def test_mixed_precision_computes_in_bf16_but_keeps_weights_and_outputs_float32(architecture):
    vae = models.build_vae(latent_dim=4, architecture=architecture, seed=0, precision="mixed_bfloat16")
    policies = _policies(vae)
    kept = models.float32_layers(vae.likelihood)
    assert {policies.pop(name) for name in kept if name in policies} == {"float32"}
    assert set(policies.values()) == {"mixed_bfloat16"}, "every other layer computes in bf16"
    assert {w.dtype for w in vae.weights} == {"float32"}, "master weights stay float32"
    x = (_batch(4) > 0.5).astype("float32")
    assert {keras.backend.standardize_dtype(v.dtype) for v in vae({"images": x}).values()} == {"float32"}
    # Switching back gives exactly the float32 model with the same weights.
    reference = models.build_vae(latent_dim=4, architecture=architecture, seed=0)
    reference.set_weights(vae.get_weights())
    models.set_precision(vae, "float32")
    assert set(_policies(vae).values()) == {"float32"}
    z = np.random.default_rng(1).normal(size=(4, 4)).astype("float32")
    inputs = vae.decoder_inputs(z, x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(vae.decoder(inputs)),
                                  keras.ops.convert_to_numpy(reference.decoder(inputs)))


def test_a_bernoulli_decoder_computes_its_last_convolution_in_bf16_and_a_mixture_in_float32():
    """Bernoulli logits tolerate bf16 (the step is faster); a logistic mixture's bin-wide locations do not."""
    cases = [("bernoulli", (32, 32, 1), "bfloat16"), ("logistic_mixture", (32, 32, 3), "float32")]
    for likelihood, shape, dtype in cases:
        vae = models.build_vae(image_shape=shape, latent_dim=4, architecture="conv", seed=0, precision="mixed_bfloat16",
                               likelihood=likelihood)
        assert vae.decoder.get_layer(models.OUTPUT_LAYER).compute_dtype == dtype, likelihood
        z = np.random.default_rng(1).normal(size=(2, 4)).astype("float32")
        params = vae.decoder(vae.decoder_inputs(z, np.zeros((2, *shape), "float32")))
        assert keras.backend.standardize_dtype(params.dtype) == "float32", "decoders return float32 parameters"
        # Without the model's likelihood nothing is assumed: the last convolution stays float32.
        assert models.OUTPUT_LAYER in models.float32_layers(None)


def test_switching_precision_retraces_compiled_prediction():
    """inference's compiled calls after set_precision run in the new precision, not the one they were traced in."""
    from mnist_vae import inference

    vae = models.build_vae(seed=0, precision="mixed_bfloat16")
    reference = models.build_vae(seed=0)
    reference.set_weights(vae.get_weights())
    z = np.random.default_rng(3).normal(size=(600, 2)).astype("float32")  # two slices of 512
    bf16 = inference.predict(vae.decoder, {"z": z})  # traces the decoder's predict function in bf16
    models.set_precision(vae, "float32")
    f32 = inference.predict(vae.decoder, {"z": z})
    assert not np.array_equal(bf16, f32)
    np.testing.assert_allclose(f32, reference.decoder.predict({"z": z}, verbose=0), rtol=1e-5, atol=1e-5)
    # A list of inputs and a list of outputs, sliced and joined row for row.
    images = _batch(600)
    z_mean, z_log_var = inference.predict(reference.encoder, {"images": images}, batch_size=256)
    expected = reference.encoder.predict({"images": images}, verbose=0)
    assert z_mean.shape == z_log_var.shape == (600, 2)
    np.testing.assert_allclose(z_mean, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_log_var, expected[1], rtol=1e-5, atol=1e-6)


def test_mixed_precision_logits_stay_close_to_float32():
    vae = models.build_vae(seed=0, precision="mixed_bfloat16")
    reference = models.build_vae(seed=0)
    reference.set_weights(vae.get_weights())
    z = np.random.default_rng(2).normal(size=(64, 2)).astype("float32")
    bf16 = keras.ops.convert_to_numpy(vae.decoder({"z": z}))
    f32 = keras.ops.convert_to_numpy(reference.decoder({"z": z}))
    assert not np.array_equal(bf16, f32), "bf16 math really ran"
    # bf16 keeps 8 significant bits: logits agree to about 1% of their spread.
    assert np.abs(bf16 - f32).max() < 0.02 * (np.abs(f32).max() + 1e-3)


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        models.build_vae(precision="float16")


def test_encoder_and_decoder_files_hold_the_model_config_not_a_graph(tmp_path):
    import zipfile

    vae = models.build_vae(architecture="resnet_ar", latent_dim=3, num_classes=10, pixel_layers=1)
    for part in (vae.encoder, vae.decoder):
        part.save(tmp_path / f"{part.name}.keras")
        saved = json.loads(zipfile.ZipFile(tmp_path / f"{part.name}.keras").read("config.json"))
        assert saved["config"] == {"name": part.name, "model": vae.config.to_dict(), "part": part.name,
                                   "precision": "float32"}
    assert sorted(vae.decoder.input) == ["images", "labels", "z"] and sorted(vae.decoder.features.input) == ["labels", "z"]
    # The autoregressive decoder on its own is rebuilt from its arguments, the same ModelConfig fields.
    decoder = models.build_resnet_ar_decoder(latent_dim=3, num_classes=10, pixel_layers=1)
    assert decoder.get_config() == {"name": "decoder", "image_shape": [32, 32, 1], "latent_dim": 3, "pad": 2,
                                    "num_classes": 10, "pixel_layers": 1}
