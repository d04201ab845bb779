"""KL control: beta, a warm-up that is a function of the epoch, free bits, and what training logs of them."""

import csv

import keras
import numpy as np
import pytest
from keras import ops

from conftest import refused_here, tiny_config
from mnist_vae import losses, models
from mnist_vae.train import train


def test_the_warm_up_rises_linearly_from_zero_to_beta_then_stays():
    weights = [float(ops.convert_to_numpy(losses.kl_weight(e, beta=2.0, warmup_epochs=4))) for e in range(7)]
    assert weights == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert losses.kl_weight(5, beta=0.3) == 0.3  # no warm-up: beta itself


def test_free_bits_stop_the_gradient_of_dimensions_below_the_threshold():
    z_mean = keras.Variable(np.array([[0.1, 2.0], [-0.1, 1.0]], "float32"))  # dim 0: KL ~0.005, dim 1: ~1.25
    z_log_var = np.zeros((2, 2), "float32")
    import tensorflow as tf  # the default backend; the formula itself is keras.ops

    with tf.GradientTape() as tape:
        kl = losses.free_bits_kl(losses.kl_per_dimension(z_mean, z_log_var), 0.5)
    grad = tape.gradient(kl, z_mean).numpy()
    assert float(kl) == pytest.approx(0.5 + 0.25 * (4.0 + 1.0), rel=1e-6)  # max(0.5, 0.005) + mean(mu^2 / 2)
    np.testing.assert_array_equal(grad[:, 0], 0.0)  # below the free bits: no pull towards the prior
    np.testing.assert_allclose(grad[:, 1], [1.0, 0.5])  # above: d/dmu of mean_batch(mu^2 / 2)


def test_the_kl_weight_is_a_schedule_of_the_optimizers_step_counter():
    vae = models.build_vae(latent_dim=2, seed=0)
    vae.compile(keras.optimizers.Adam(1e-3), kl_weight=losses.KLSchedule(1.5, warmup_epochs=3, steps_per_epoch=10))
    for step, expected in [(0, 0.0), (9, 0.0), (10, 0.5), (25, 1.0), (30, 1.5), (99, 1.5)]:
        vae.optimizer.iterations.assign(step)
        weight = vae.kl_schedule(vae.optimizer.iterations)
        assert float(ops.convert_to_numpy(weight)) == pytest.approx(expected), step
    assert float(ops.convert_to_numpy(vae.kl_schedule.at_epoch(2))) == pytest.approx(1.0)


def _history(out):
    with open(out / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_logs_the_kl_weight_active_units_and_kl_per_dimension(tmp_path):
    out = tmp_path / "run"
    metrics = train(tiny_config(epochs=3, beta=0.5, kl_warmup=2, free_bits=0.1, latent_dim=3), out, verbose=0)
    rows = _history(out)
    assert [float(r["kl_weight"]) for r in rows] == [0.0, 0.25, 0.5]
    assert all(0 <= int(float(r["active_units"])) <= 3 for r in rows)
    # The checkpoint is the epoch with the lowest unweighted negative ELBO, not the lowest training loss.
    best = min(float(r["val_negative_elbo"]) for r in rows)
    assert metrics["best_val_loss"] == pytest.approx(best, rel=1e-6)
    # Reported losses are the unweighted ELBO: loss = reconstruction + KL.
    assert metrics["test"]["loss"] == pytest.approx(metrics["test"]["reconstruction_loss"] + metrics["test"]["kl_loss"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latent = EventAccumulator(str(out / "logs" / "latent")).Reload()
    assert {f"kl_per_dimension/z{d:02d}" for d in range(3)} <= set(latent.Tags()["tensors"])
    scalars = EventAccumulator(str(out / "logs" / "train")).Reload()
    assert {"epoch_kl_weight", "epoch_active_units"} <= set(scalars.Tags()["tensors"])


@pytest.mark.parametrize("flags,message", [
    (["--free-bits", "-1"], "--free-bits must be between 0 and 100"),
    (["--beta", "nan"], "--beta must be between 0 and 1,000"),
    (["--kl-warmup", "-2"], "--kl-warmup must be between 0 and 100,000"),
])
def test_bad_kl_settings_are_one_line_errors(flags, message, tmp_path):
    result = refused_here("train", "--out", tmp_path / "run", *flags)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
