"""End to end: the CLI's promised files, resume after interruption or kill, refusing to lose data."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from conftest import REPO, assert_complete_run, refused_here, run_cli, tiny_config
from mnist_vae.config import Config
from mnist_vae.errors import UserError
from mnist_vae.archive import load_model
from mnist_vae.rundir import RunDir
from mnist_vae.precision import cpu_has_native_bf16
from mnist_vae.train import train

@pytest.mark.slow
def test_cli_train_writes_every_promised_file(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--limit", "512", "--epochs", "1", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test loss" in result.stdout
    metrics = assert_complete_run(out, epochs=1)
    assert metrics["units"].startswith("nats per image") and metrics["dataset"] == "mnist"
    assert Config.load(out / "config.json") == Config(limit=512, epochs=1)
    for name in ("vae", "encoder", "decoder"):
        load_model(out / "models" / f"{name}.keras")
    load_model(out / "checkpoint.keras")
    # TensorBoard: scalars for train and validation, and the per-epoch images.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = EventAccumulator(str(out / "logs" / "images"), size_guidance={"images": 0, "tensors": 0}).Reload()
    assert {"reconstructions", "samples", "manifold"} <= set(images.Tags()["tensors"])
    for sub in ("train", "validation"):
        scalars = EventAccumulator(str(out / "logs" / sub)).Reload()
        assert "epoch_loss" in scalars.Tags()["tensors"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_cli_train_evaluate_and_plot_run_on_the_gpu_backends(backend, tmp_path):
    pytest.importorskip(backend)  # neither is a dependency; .ci/run installs torch's CPU wheel
    env = {"KERAS_BACKEND": backend}
    out = tmp_path / "run"
    # torch runs the default steps_per_execution (16) as one step per call; bf16 runs on both.
    # Whole batches everywhere (JAX compiles a step once more for a partial one).
    result = run_cli("train", "--limit", "200", "--batch-size", "100", "--epochs", "1", "--validation-size", "100",
                     "--test-limit", "100", "--out", out, "--quiet", "--precision", "mixed_bfloat16", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["precision"] == "mixed_bfloat16"
    assert_complete_run(out, epochs=1)
    result = run_cli("evaluate", out, "--iw-samples", "4", "--limit", "10", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "evaluation.json").read_text())["iw_samples"] == 4
    result = run_cli("plot", out, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


def _weights_of(path):
    return [np.array(w) for w in load_model(path).get_weights()]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"conditional": True, "kl_warmup": 2, "free_bits": 0.05}],
                         ids=["plain", "conditional-warmup-freebits"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, extra):
    # The warm-up is a function of the epoch (the optimizer's step counter): a resumed run follows the same curve.
    config = tiny_config(epochs=3, **extra)
    train(config, tmp_path / "straight", verbose=0)

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(config, out, verbose=0, callbacks=[_Interrupt(at_epoch=2)])
    assert not (out / "metrics.json").exists() and (out / "backup" / "state.json").exists()
    train(config, out, resume=True, verbose=0)

    assert_complete_run(out, epochs=3)
    # Same batches, same noise, same optimizer state: the resumed run ends exactly where the
    # straight one does (TF on CPU is deterministic for this model: two straight runs match bitwise).
    for a, b in zip(_weights_of(tmp_path / "straight/models/vae.keras"), _weights_of(out / "models/vae.keras")):
        np.testing.assert_array_equal(a, b)
    assert _history_without_timings(tmp_path / "straight/history.csv") == _history_without_timings(out / "history.csv")


def _history_without_timings(path):
    """history.csv's columns by name, less ``epoch_seconds`` (wall time is the one thing a resume changes)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and "epoch_seconds" in rows[0] and "loss" in rows[0]
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


@pytest.mark.slow
def test_a_damaged_newest_state_falls_back_to_the_previous_one(tmp_path):
    config = tiny_config(epochs=3)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, out, verbose=0, callbacks=[_Interrupt(at_epoch=2)])
    state = json.loads((out / "backup/state.json").read_text())
    assert state["epoch"] == 2
    (out / "backup" / state["weights"]).write_bytes(b"half-written")
    train(config, out, resume=True, verbose=0)
    assert_complete_run(out, epochs=3)


@pytest.mark.slow
def test_a_killed_process_resumes_and_finishes(tmp_path):
    from mnist_vae.atomic import temporary_beside
    from mnist_vae.rundir import RunDir

    out = tmp_path / "run"
    args = [sys.executable, "-m", "mnist_vae", "train", "--out", str(out), "--limit", "256", "--test-limit", "500",
            "--validation-size", "200", "--batch-size", "64", "--epochs", "30", "--grid-size", "3", "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "backup" / "state.json"
    deadline = time.time() + 240
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    # A second process on the same folder while the first trains: refused at once, one line.
    second = run_cli("train", "--resume", "--out", out, "--quiet")
    assert proc.poll() is None, "the first run was still training during the second's attempt"
    assert second.returncode == 2 and f"in use by another vae process (pid {proc.pid}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: a hard kill mid-training
    proc.wait()
    assert state.exists(), "a state was saved before the kill"
    assert not (out / "metrics.json").exists(), "killed before finishing (the test needs a mid-run kill)"
    assert (out / ".vae.lock").exists(), "the killed process left its lock file"
    run = RunDir(out)
    orphans = [temporary_beside(run.checkpoint, ".keras"), temporary_beside(run.history, ".csv")]  # as a kill mid-save
    result = run_cli("train", "--resume", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_complete_run(out, epochs=30)
    assert not any(os.path.exists(p) for p in orphans) and not run.temporaries()


def test_existing_runs_are_never_clobbered_by_accident(trained_run, tmp_path):
    source, _ = trained_run
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = refused_here("train", "--out", out, "--limit", "64", "--epochs", "1")
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and "--resume" in result.stderr and "--overwrite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # --resume of a finished run, and a changed config on resume, are refused too.
    with pytest.raises(UserError, match="already finished"):
        train(Config.load(out / "config.json"), out, resume=True, verbose=0)
    with pytest.raises(UserError, match="latent_dim differ"):
        train(tiny_config(epochs=2, latent_dim=3), out, resume=True, verbose=0)
    with pytest.raises(UserError, match="no run to resume"):
        train(tiny_config(), tmp_path / "empty", resume=True, verbose=0)


def test_test_limit_scores_the_first_test_images_and_may_change_on_resume(trained_run, tmp_path):
    from mnist_vae.data import load_splits
    from mnist_vae.estimators import evaluate_losses
    from mnist_vae.rundir import RunDir, load_inference_model

    source, metrics = trained_run
    assert metrics["test_images"] == 500
    test = load_splits("mnist", 500, limit=1).test
    vae = load_inference_model(RunDir(source))
    # The KL term is deterministic (one posterior sample makes the reconstruction term noisy).
    expected = evaluate_losses(vae, test.images[:500], 500)["kl_loss"]
    assert metrics["test"]["kl_loss"] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(evaluate_losses(vae, test.images[:1000], 500)["kl_loss"], rel=1e-5)
    # Not pinned by --resume: the finished run is refused as finished, not as changed.
    shutil.copytree(source, tmp_path / "copy")
    with pytest.raises(UserError, match="already finished"):
        train(tiny_config(epochs=2, test_limit=100), tmp_path / "copy", resume=True, verbose=0)


def test_overwrite_replaces_only_the_run_outputs(trained_run, tmp_path):
    source, _ = trained_run
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    (out / "notes.txt").write_text("mine")
    train(tiny_config(), out, overwrite=True, verbose=0)
    assert_complete_run(out, epochs=1)
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_errors_are_one_line(tmp_path):
    for args, message in [
        (["train", "--out", tmp_path / "a", "--latent-dim", "0"], "--latent-dim must be between 1 and 1,024"),
        (["train", "--out", tmp_path / "b", "--resume"], "no run to resume"),
        (["train", "--out", tmp_path / "c", "--config", tmp_path / "missing.json"], "config file not found"),
        (["plot", tmp_path / "nothing"], "not a run directory"),
        (["evaluate", tmp_path / "nothing"], "not a run directory"),
    ]:
        result = refused_here(*args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "a").exists(), "a rejected config writes nothing"


def test_plot_command_redraws_the_pictures(trained_run, tmp_path):
    source, _ = trained_run
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    shutil.rmtree(out / "plots")
    result = run_cli("plot", out, "--grid-size", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(
        ["interpolation.png", "latent_scatter.png", "manifold.png", "reconstructions.png", "samples.png"])
    bad = refused_here("plot", out, "--dims", "0", "7")
    assert bad.returncode == 2 and "--dims" in bad.stderr


@pytest.mark.slow
def test_higher_latent_dims_plot_principal_components(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(latent_dim=4), out, verbose=0)
    assert (out / "plots/latent_scatter.png").is_file() and (out / "plots/manifold.png").is_file()
    result = run_cli("plot", out, "--dims", "1", "3")
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_main_py_trains_into_the_current_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--limit", "128", "--test-limit", "200", "--epochs", "1",
         "--validation-size", "200", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_complete_run(tmp_path, epochs=1)


def test_a_start_that_fails_on_data_writes_nothing(tmp_path, monkeypatch):
    from mnist_vae import data

    monkeypatch.setitem(data.DATASETS, "fashion_mnist", data.DATASETS["fashion_mnist"].__class__(
        **{**data.DATASETS["fashion_mnist"].__dict__, "system_dirs": (), "urls": ()}))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_VAE_DATA", raising=False)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="fashion_mnist not found"):
        train(tiny_config(dataset="fashion_mnist"), out, verbose=0)
    assert not out.exists() or not any(out.iterdir())


def test_written_files_get_ordinary_permissions(trained_run):
    out, _ = trained_run
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.json", "metrics.json", "models/vae.keras", "plots/samples.png", "checkpoint.keras"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_cosine_schedule_decays_to_one_percent_over_the_configured_epochs():
    from mnist_vae.train import make_optimizer

    config = Config(epochs=4, learning_rate=2e-3, lr_schedule="cosine")
    optimizer = make_optimizer(config, steps_per_epoch=10)
    rates = [float(optimizer._learning_rate(step)) for step in (0, 20, 40)]
    assert rates[0] == pytest.approx(2e-3) and rates[1] == pytest.approx(2e-3 * (0.5 + 0.5 * 0.01), rel=1e-3)
    assert rates[2] == pytest.approx(2e-5, rel=1e-3)
    # A constant schedule is a plain float (the keras_io preset's 1e-3).
    constant = make_optimizer(Config(learning_rate=1e-3, lr_schedule="constant"), 10)
    assert float(constant.learning_rate) == pytest.approx(1e-3)


@pytest.mark.parametrize("schedule, floor", [("constant", 1.0), ("cosine", 0.01)])
def test_learning_rate_warms_up_linearly_then_follows_the_schedule_over_the_remaining_epochs(schedule, floor):
    from mnist_vae.train import make_optimizer

    optimizer = make_optimizer(Config(epochs=5, learning_rate=2e-3, lr_schedule=schedule, lr_warmup=1), 10)
    rate = lambda step: float(optimizer._learning_rate(step))  # noqa: E731
    assert [rate(s) for s in (0, 5, 10)] == pytest.approx([0.0, 1e-3, 2e-3])
    assert rate(30) == pytest.approx(2e-3 * (floor + (1 - floor) * 0.5), rel=1e-3)  # half-way through the decay
    assert rate(50) == pytest.approx(2e-3 * floor, rel=1e-3)
    with pytest.raises(UserError, match="--lr-warmup .* must be shorter than --epochs"):
        Config(epochs=3, lr_warmup=3).validate()


def test_auto_precision_picks_bf16_only_on_tensorflow_with_native_bf16(tmp_path):
    from mnist_vae.precision import cpu_has_native_bf16, resolve_precision

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 fma\n\nprocessor\t: 1\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f fma\n")
    assert cpu_has_native_bf16(with_bf16) and not cpu_has_native_bf16(without)
    assert not cpu_has_native_bf16(tmp_path / "missing")
    expected = "mixed_bfloat16" if keras.backend.backend() == "tensorflow" else "float32"
    assert resolve_precision("auto", with_bf16) == expected
    assert resolve_precision("auto", without) == "float32"
    for explicit in ("float32", "mixed_bfloat16"):
        assert resolve_precision(explicit, without) == explicit


def test_onednn_turned_off_or_capped_below_bf16_is_not_native_bf16(tmp_path):
    from mnist_vae.precision import check_precision_runs, emulated_bf16_warning, resolve_precision

    with_bf16 = tmp_path / "cpuinfo"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 fma\n")
    for environ in ({}, {"ONEDNN_MAX_CPU_ISA": "ALL"}, {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"},
                    {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}, {"TF_ENABLE_ONEDNN_OPTS": "1"}):
        assert cpu_has_native_bf16(with_bf16, environ), environ
        check_precision_runs("mixed_bfloat16", with_bf16, environ)
    tensorflow = keras.backend.backend() == "tensorflow"
    # Capped (the new name, its old one, any case) or turned off: auto means float32, explicit bf16 warns.
    for environ in ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"ONEDNN_MAX_CPU_ISA": " avx512_core "},
                    {"DNNL_MAX_CPU_ISA": "AVX2_VNNI"}, {"TF_ENABLE_ONEDNN_OPTS": "0"},
                    {"TF_ENABLE_ONEDNN_OPTS": "False"}):
        assert not cpu_has_native_bf16(with_bf16, environ), environ
        assert resolve_precision("auto", with_bf16, environ) == "float32"
        assert resolve_precision("mixed_bfloat16", with_bf16, environ) == "mixed_bfloat16"
        assert (emulated_bf16_warning("mixed_bfloat16", with_bf16, environ) is not None) == tensorflow
        check_precision_runs("float32", with_bf16, environ)
    if tensorflow:  # the warning names what makes it slow here: not the CPU
        assert "TF_ENABLE_ONEDNN_OPTS=0 runs TensorFlow's generic kernels" in emulated_bf16_warning(
            "mixed_bfloat16", with_bf16, {"TF_ENABLE_ONEDNN_OPTS": "0"})
    # Where TensorFlow would still ask oneDNN for bf16 kernels (the CPU has the flags) and oneDNN is
    # capped below them, bf16 cannot run at all (next test): refused in one line.
    if tensorflow:
        with pytest.raises(UserError, match="--precision mixed_bfloat16 cannot run with ONEDNN_MAX_CPU_ISA=AVX2: .*"
                                            "unset it, or use --precision float32"):
            check_precision_runs("mixed_bfloat16", with_bf16, {"ONEDNN_MAX_CPU_ISA": "avx2"})
    # ... but not with oneDNN off (generic kernels, emulated) or on a CPU without the flags (the same).
    check_precision_runs("mixed_bfloat16", with_bf16, {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"})
    without = tmp_path / "cpuinfo-avx2"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    check_precision_runs("mixed_bfloat16", without, {"ONEDNN_MAX_CPU_ISA": "AVX2"})


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's oneDNN kernels")
@pytest.mark.skipif(not cpu_has_native_bf16(environ={}),
                    reason="needs a CPU with bf16 flags, where TensorFlow asks oneDNN for bf16 kernels")
@pytest.mark.slow
def test_a_onednn_cap_below_bf16_refuses_explicit_bf16_and_auto_trains_in_float32(tmp_path):
    # Why the refusal: TensorFlow (2.21) asks oneDNN for bf16 kernels from the CPU's flags, and under
    # the cap oneDNN will not build them. If this starts to run, TensorFlow has learned to fall
    # back, and check_precision_runs should warn instead of refusing.
    cap = {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "1"}
    probe = subprocess.run([sys.executable, "-c", "import tensorflow as tf; x = tf.zeros((1, 8, 8, 1), tf.bfloat16); "
                            "print(tf.nn.conv2d(x, tf.zeros((3, 3, 1, 4), tf.bfloat16), 1, 'SAME').shape)"],
                           env={**os.environ, **cap}, capture_output=True, text=True, timeout=300)
    assert probe.returncode != 0 and "could not create a primitive descriptor" in probe.stderr, probe.stdout

    common = ("--limit", "256", "--epochs", "1", "--validation-size", "500", "--batch-size", "64",
              "--test-limit", "500", "--grid-size", "4", "--quiet")
    refused = run_cli("train", "--out", tmp_path / "bf16", "--precision", "mixed_bfloat16", *common, env=cap)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "vae train: error: --precision mixed_bfloat16 cannot run with ONEDNN_MAX_CPU_ISA=AVX2: oneDNN is capped below "
        "its bf16 kernels, which TensorFlow asks for on this CPU; unset it, or use --precision float32"], refused.stderr
    assert not (tmp_path / "bf16").exists()  # refused before the run folder was made

    auto = run_cli("train", "--out", tmp_path / "auto", *common, env=cap)
    assert auto.returncode == 0, auto.stderr
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["precision"] == "float32"


@pytest.mark.slow
def test_bf16_without_native_instructions_warns_and_a_resume_says_its_precision_changed(tmp_path, capsys,
                                                                                       monkeypatch):
    from mnist_vae.train import session as train_module
    from mnist_vae.precision import emulated_bf16_warning

    without = tmp_path / "cpuinfo"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    with_bf16 = tmp_path / "cpuinfo-bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 fma\n")
    assert "is emulated" in emulated_bf16_warning("mixed_bfloat16", without)
    assert emulated_bf16_warning("mixed_bfloat16", with_bf16) is None
    assert emulated_bf16_warning("float32", without) is None

    # Trained in bf16 for an epoch (as on a bf16 CPU), resumed where auto means float32.
    out, config = tmp_path / "run", tiny_config(epochs=2, precision="auto")
    monkeypatch.setattr(train_module, "resolve_precision", lambda precision: "mixed_bfloat16")
    monkeypatch.setattr(train_module, "emulated_bf16_warning", lambda precision: None)
    with pytest.raises(KeyboardInterrupt):
        train(config, out, verbose=0, callbacks=[_Interrupt(at_epoch=1)])
    capsys.readouterr()
    monkeypatch.setattr(train_module, "resolve_precision", lambda precision: "float32")
    train(config, out, resume=True, verbose=0)
    err = capsys.readouterr().err
    assert ("this run trained in mixed_bfloat16 up to epoch 1; here --precision auto is float32, "
            "so it continues in float32") in err, err
    assert json.loads((out / "metrics.json").read_text())["precision"] == "float32"

    # An explicit bf16 run on such a CPU warns once, before training.
    monkeypatch.setattr(train_module, "emulated_bf16_warning", lambda precision: emulated_bf16_warning(precision, without))
    monkeypatch.setattr(train_module, "resolve_precision", lambda precision: precision)
    train(tiny_config(precision="mixed_bfloat16"), tmp_path / "bf16", verbose=0)
    assert capsys.readouterr().err.count("vae train: warning: mixed_bfloat16 on a CPU without native bf16") == 1


def test_reported_losses_are_float32_whatever_the_training_precision(tmp_path):
    from mnist_vae.data import load_splits
    from mnist_vae.estimators import evaluate_losses
    from mnist_vae.models import set_precision
    from mnist_vae.train import EVAL_BATCH_SIZE

    config = tiny_config(precision="mixed_bfloat16", limit=128)
    metrics = train(config, tmp_path, verbose=0)
    assert metrics["precision"] == "mixed_bfloat16"
    assert Config.load(tmp_path / "config.json").precision == "mixed_bfloat16"
    splits = load_splits(config.dataset, config.validation_size, config.limit, test_limit=config.test_limit)

    def replay(precision):
        """The run's final evaluation again, from the saved model (same weights, same noise)."""
        vae = set_precision(load_model(RunDir(tmp_path).vae), precision)
        return [evaluate_losses(vae, getattr(splits, name).images, EVAL_BATCH_SIZE)
                for name in ("train", "validation", "test")]

    float32 = replay("float32")
    assert float32 == [metrics[name] for name in ("train", "validation", "test")]
    assert replay("mixed_bfloat16") != float32, "the bf16 numbers differ, so the switch mattered"
