"""The observation models: normalised over their support, means and samples that agree, one registry."""

import json
import math
import zipfile

import keras
import numpy as np
import pytest
from keras import ops

from mnist_vae import models, observation
from mnist_vae.config import Config
from mnist_vae.errors import UserError

MIXTURE = observation.LIKELIHOODS["logistic_mixture"]


def _random_params(rng, lead, channels, scale=1.0):
    return (scale * rng.standard_normal((*lead, MIXTURE.parameter_channels(channels)))).astype("float32")


def _levels(channels):
    """The 256 levels of one sub-pixel, as model inputs in [0, 1]: (256, 1, 1, channels)."""
    return np.repeat((np.arange(256, dtype="float32") / 255.0)[:, None, None, None], channels, axis=-1)


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
def test_the_discretised_logistic_mixture_sums_to_one_over_the_256_levels(scale):
    rng = np.random.default_rng(int(scale * 10))
    params = _random_params(rng, (1, 6), 1, scale)  # 6 pixels, random locations, scales and weights
    log_p = ops.convert_to_numpy(MIXTURE.log_prob(_levels(1)[:, :, :1].repeat(6, axis=2), params))  # (256, 1, 6, 1)
    totals = np.exp(log_p.astype(np.float64)).sum(axis=0)
    np.testing.assert_allclose(totals, 1.0, atol=2e-3)


def _logistic_cdf(t):
    return 1.0 / (1.0 + np.exp(-t))


def _reference_log_prob(x, params, channels):
    """An independent NumPy transcription of Salimans et al.'s formula for one pixel (float64)."""
    k = MIXTURE.components
    params = params.astype(np.float64)
    logits, loc = params[:k], params[k:k + k * channels].reshape(k, channels)
    log_scale = np.maximum(params[k + k * channels:k + 2 * k * channels].reshape(k, channels), -7.0)
    coeff = np.tanh(params[k + 2 * k * channels:].reshape(k, -1))
    y = 2.0 * x.astype(np.float64) - 1.0
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    total = 0.0
    for m in range(k):
        mu = loc[m].copy()
        if channels == 3:
            mu[1] += coeff[m, 0] * y[0]
            mu[2] += coeff[m, 1] * y[0] + coeff[m, 2] * y[1]
        p = 1.0
        for c in range(channels):
            s = np.exp(log_scale[m, c])
            upper = 1.0 if y[c] > 0.999 else _logistic_cdf((y[c] + 1 / 255 - mu[c]) / s)
            lower = 0.0 if y[c] < -0.999 else _logistic_cdf((y[c] - 1 / 255 - mu[c]) / s)
            p *= upper - lower
        total += weights[m] * p
    return math.log(total)


def test_colour_pixels_match_an_independent_transcription_of_the_formula():
    rng = np.random.default_rng(3)
    params = _random_params(rng, (12,), 3, 0.5)
    levels = rng.integers(0, 256, (12, 3))
    levels[0] = (0, 255, 128)  # both end bins
    x = (levels / 255.0).astype("float32")
    got = ops.convert_to_numpy(MIXTURE.log_prob(x, params))[:, 0]
    expected = [_reference_log_prob(x[i], params[i], 3) for i in range(12)]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_mixture_samples_are_8_bit_levels_whose_average_is_the_mean():
    rng = np.random.default_rng(5)
    k = MIXTURE.components
    params = _random_params(rng, (1,), 3, 0.5)
    params[:, k:k + 3 * k] = rng.uniform(-0.3, 0.3, 3 * k)  # locations, and below scales of 0.05 on [-1, 1],
    params[:, k + 3 * k:k + 6 * k] = -3.0  # so even shifted by the other channels the end bins clip almost nothing
    params = np.repeat(params, 20000, axis=0)  # one pixel, drawn 20,000 times
    draws = MIXTURE.sample(params, rng.random((20000, 1 + 3), dtype=np.float32))
    assert draws.shape == (20000, 3)
    np.testing.assert_array_equal(np.round(draws * 255), draws * 255)  # on the 256-level grid
    mean = MIXTURE.mean(params[:1])[0]
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=0.01)


def test_gradient_descent_on_the_mixture_alone_reaches_sharp_correct_pixels():
    # Free parameters per pixel, no network: the likelihood's own gradients must pull the means
    # onto the data and the scales down to a bin, end levels included. (Colour MNIST's slow
    # learning in BENCHMARKS.md is then the networks', not this formula's.)
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (4, 6, 6, 3))
    levels[0, 0] = (0, 255, 128)
    x = (levels / 255.0).astype("float32")
    params = keras.Variable(0.05 * rng.standard_normal((4, 6, 6, MIXTURE.parameter_channels(3))).astype("float32"))
    optimizer = keras.optimizers.Adam(0.05)
    import tensorflow as tf  # the default backend; the likelihood itself is keras.ops

    for _ in range(300):
        with tf.GradientTape() as tape:
            loss = -ops.mean(MIXTURE.log_prob(x, params))
        optimizer.apply_gradients([(tape.gradient(loss, params), params)])
    bits_per_dim = float(loss) / 3 / math.log(2)
    assert bits_per_dim < 0.6, bits_per_dim  # from about 8 (the 256 levels equally likely)
    error = np.abs(MIXTURE.mean(params.numpy()) * 255 - levels)
    # Most means sit on their level; a few keep a little mass in other components (measured: median
    # 0.004 levels, 90th percentile 0.53, at 0.45 bits/dim).
    assert np.percentile(error, 90) < 1.0, np.percentile(error, [50, 90, 100])


def test_bernoulli_samples_average_to_the_mean_and_log_prob_is_the_cross_entropy():
    bern = observation.LIKELIHOODS["bernoulli"]
    logits = np.array([[-2.0, 0.0, 3.0]], "float32").repeat(40000, axis=0)
    draws = bern.sample(logits, np.random.default_rng(0).random(logits.shape, dtype=np.float32))
    np.testing.assert_allclose(draws.mean(axis=0), bern.mean(logits[:1])[0], atol=0.01)
    x = np.array([1.0, 0.0, 1.0], "float32")
    p = 1 / (1 + np.exp(-logits[0].astype(np.float64)))
    expected = np.log(np.where(x == 1, p, 1 - p))
    np.testing.assert_allclose(ops.convert_to_numpy(bern.log_prob(x, logits[0])), expected, rtol=1e-6)


def test_every_likelihood_has_the_whole_interface_and_one_registry_entry():
    for name, likelihood in observation.LIKELIHOODS.items():
        assert likelihood.name == name
        for method in ("log_prob", "mean", "sample", "parameter_channels", "check", "uniforms_per_pixel"):
            assert callable(getattr(likelihood, method)), (name, method)
        assert set(likelihood.binarize) <= {"none", "dynamic"}
    with pytest.raises(ValueError, match="unknown likelihood 'gaussian'"):
        observation.get_likelihood("gaussian")


def test_a_likelihood_is_a_model_property_saved_with_it(tmp_path):
    vae = models.build_vae(latent_dim=3, seed=0, likelihood="logistic_mixture")
    assert vae.decoder.outputs[0].shape[-1] == MIXTURE.parameter_channels(1)
    vae.save(tmp_path / "vae.keras")
    loaded = keras.saving.load_model(tmp_path / "vae.keras")
    assert (loaded.likelihood, loaded.pad, loaded.autoregressive) == ("logistic_mixture", 2, False)
    assert loaded.geometry == observation.GREY_28


@pytest.mark.parametrize("drop, message", [("model", "holds no model description"),
                                            ("likelihood", "names no likelihood")])
def test_a_model_file_that_names_no_likelihood_is_refused_not_guessed(tmp_path, drop, message):
    """A ``vae.keras`` without its model config, or without the likelihood in it, cannot say what its decoder returns."""
    from mnist_vae.errors import UserError
    from mnist_vae.archive import load_model

    vae = models.build_vae(latent_dim=3, architecture="resnet_ar", seed=0)
    vae.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as src, zipfile.ZipFile(tmp_path / "old.keras", "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(content)
                holder = config["config"] if drop == "model" else config["config"]["model"]
                del holder[drop]
                content = json.dumps(config).encode()
            dst.writestr(item, content)
    with pytest.raises(UserError, match=f"{message}; re-train it with this version"):
        load_model(tmp_path / "old.keras")


def test_likelihoods_that_do_not_fit_the_data_or_decoder_are_one_line_errors():
    Config(likelihood="logistic_mixture").validate()  # 8-bit grey MNIST: a proper likelihood
    cases = [
        (dict(likelihood="logistic_mixture", binarize="dynamic"), "models 8-bit levels; drop --binarize dynamic"),
        (dict(likelihood="bernoulli_ar", binarize="dynamic"), "needs an architecture whose decoder returns"),
        (dict(architecture="resnet_ar", likelihood="bernoulli", binarize="dynamic"), r"conv, keras_io, resnet \(not resnet_ar\)"),
        (dict(architecture="resnet_ar", likelihood="bernoulli_ar"), "add --binarize dynamic"),
        (dict(likelihood="gaussian"), "--likelihood must be one of"),
    ]
    for fields, message in cases:
        with pytest.raises(UserError, match=message):
            Config(**fields).validate()
    assert "use --likelihood logistic_mixture" in observation.LIKELIHOODS["bernoulli"].check(3)
    assert observation.LIKELIHOODS["logistic_mixture"].check(3) is None


def test_geometry_pads_and_crops_back():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    x = observation.GREY_28.to_model_input(images)
    assert x.shape == (3, *observation.GREY_28.model_shape) and x[:, :2].max() == 0
    np.testing.assert_array_equal(observation.GREY_28.from_model_input(x)[..., 0] * 255, images)
    colour = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    y = observation.COLOUR_32.to_model_input(colour)
    assert y.shape == (2, 32, 32, 3) and observation.COLOUR_32.scored_dims == 3072
    np.testing.assert_array_equal(observation.COLOUR_32.from_model_input(y) * 255, colour)
