"""The objective against a NumPy reference."""

import numpy as np
from keras import ops

from mnist_vae import losses


def _np_bce_sum(x, logits):
    """Reference BCE in float64: -[x log s(l) + (1-x) log(1 - s(l))], summed over 28x28 inner pixels."""
    x = x.astype(np.float64)[:, 2:-2, 2:-2]
    logits = logits.astype(np.float64)[:, 2:-2, 2:-2]
    log_p = -np.logaddexp(0.0, -logits)  # log sigmoid(l)
    log_not_p = -np.logaddexp(0.0, logits)  # log (1 - sigmoid(l))
    return -(x * log_p + (1 - x) * log_not_p).reshape(len(x), -1).sum(axis=1)


def test_reconstruction_loss_matches_numpy_including_extreme_logits():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 32, 32, 1)).astype("float32")
    x[0] = np.round(x[0])  # binary pixels too
    logits = (rng.normal(size=(5, 32, 32, 1)) * 4).astype("float32")
    logits[1, 10, 10, 0], logits[1, 11, 11, 0] = 80.0, -80.0  # exp would overflow float32 naively
    got = ops.convert_to_numpy(losses.reconstruction_loss(x, logits))
    assert got.shape == (5,)
    np.testing.assert_allclose(got, _np_bce_sum(x, logits), rtol=1e-5)
    assert np.all(np.isfinite(got))


def test_reconstruction_loss_ignores_the_padding():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(2, 32, 32, 1)).astype("float32")
    logits = rng.normal(size=(2, 32, 32, 1)).astype("float32")
    changed = logits.copy()
    changed[:, :2] = 100.0
    changed[:, :, -2:] = -100.0
    np.testing.assert_allclose(
        ops.convert_to_numpy(losses.reconstruction_loss(x, logits)),
        ops.convert_to_numpy(losses.reconstruction_loss(x, changed)),
    )


def test_kl_matches_the_closed_form_and_is_zero_at_the_prior():
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(4, 3)).astype("float32")
    log_var = rng.normal(size=(4, 3)).astype("float32")
    var = np.exp(log_var.astype(np.float64))
    expected = 0.5 * np.sum(var + mean.astype(np.float64) ** 2 - 1.0 - log_var, axis=1)
    np.testing.assert_allclose(ops.convert_to_numpy(losses.kl_loss(mean, log_var)), expected, rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(losses.kl_loss(np.zeros((2, 3)), np.zeros((2, 3)))), 0.0)


def test_kl_matches_a_monte_carlo_estimate():
    mean, log_var = np.array([[0.7, -1.2]]), np.array([[-0.5, 0.4]])
    rng = np.random.default_rng(3)
    z = mean + np.exp(0.5 * log_var) * rng.standard_normal((400_000, 2))
    log_q = -0.5 * (np.log(2 * np.pi) + log_var + (z - mean) ** 2 / np.exp(log_var))
    log_p = -0.5 * (np.log(2 * np.pi) + z**2)
    mc = np.mean(np.sum(log_q - log_p, axis=1))
    assert abs(float(ops.convert_to_numpy(losses.kl_loss(mean, log_var))[0]) - mc) < 0.01


def test_vae_loss_names_its_terms_and_adds_them_with_beta():
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(3, 32, 32, 1)).astype("float32")
    logits = rng.normal(size=(3, 32, 32, 1)).astype("float32")
    mean, log_var = rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(3, 2)).astype("float32")
    terms = {k: ops.convert_to_numpy(v) for k, v in losses.vae_loss(x, logits, mean, log_var, beta=0.5).items()}
    assert set(terms) == {"loss", "reconstruction_loss", "kl_loss"}
    np.testing.assert_allclose(terms["loss"], terms["reconstruction_loss"] + 0.5 * terms["kl_loss"], rtol=1e-6)
