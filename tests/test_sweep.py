"""vae sweep: spec checks (no Ray needed) and a small ASHA sweep on a local Ray, killed and continued."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_complete_run, run_cli
from mnist_vae.errors import UserError
from mnist_vae.lock import locked
from mnist_vae.rundir import RunDir
from mnist_vae.sweep import spec_from_dict

BASE = {"epochs": 2, "limit": 512, "validation_size": 200, "test_limit": 200, "grid_size": 3, "precision": "float32"}


@pytest.mark.parametrize("spec, message", [
    ({"base": BASE}, "nothing to search"),
    ({"grid": {"beta": [1.0]}, "sampels": 2}, "unknown key(s) 'sampels'"),
    ({"grid": {"latent_dims": [2, 4]}}, "did you mean 'latent_dim'"),
    ({"grid": {"latent_dim": []}}, "needs a non-empty list"),
    ({"grid": {"latent_dim": [2, 0]}}, "sweep spec: field latent_dim must be between"),
    ({"base": {"beta": 1.0}, "grid": {"beta": [0.5]}}, "both in \"base\" and searched"),
    ({"random": {"learning_rate": {"lognormal": [1e-4, 1e-2]}}}, "needs one of {uniform, loguniform"),
    ({"random": {"learning_rate": {"loguniform": [1e-2, 1e-4]}}}, "needs [low, high] with low < high"),
    ({"random": {"learning_rate": {"loguniform": [1e-4, 5.0]}}}, "field learning_rate must be between 0 and 1"),
    ({"grid": {"epochs": [1, 2]}}, "search other fields than epochs"),
    ({"grid": {"beta": [1.0]}, "early_stopping": "hyperband"}, "\"early_stopping\" must be one of"),
    ({"base": {"epochs": 2}, "grid": {"beta": [1.0]}, "grace_epochs": 3}, "\"grace_epochs\" must be an integer from 1"),
    ({"grid": {"beta": [1.0]}, "plot": ["latent_dim"]}, "\"plot\" names at most two searched fields"),
])
def test_a_bad_spec_is_refused_naming_the_problem(spec, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("{", r"\{")):
        spec_from_dict(spec)


def test_a_good_spec_defaults_its_plot_to_the_first_two_searched_fields():
    spec = spec_from_dict({"base": BASE, "grid": {"beta": [0.5, 1.0]},
                           "random": {"learning_rate": {"loguniform": [1e-4, 1e-2]}, "latent_dim": {"choice": [2, 8]}}})
    assert spec.searched == ["beta", "learning_rate", "latent_dim"] and spec.plot == ["beta", "learning_rate"]
    assert [c.beta for c in spec.configs()] == [0.5, 1.0]


@pytest.mark.slow
def test_the_cli_refuses_a_bad_spec_in_one_line_and_writes_nothing(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"grid": {"latent_dims": [2]}}))
    result = run_cli("sweep", spec, "--out", tmp_path / "sweep")
    assert result.returncode == 2 and "did you mean 'latent_dim'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "sweep").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    spec.write_text(json.dumps({"base": BASE, "grid": {"beta": [1.0]}}))
    result = run_cli("sweep", spec, "--out", tmp_path / "busy")
    assert result.returncode == 2 and "is not empty and holds no sweep" in result.stderr
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='Ray Tune is not installed (pip install ".[sweep]")')
def test_a_sweep_stops_trials_early_writes_its_table_and_plot_and_continues_after_a_kill(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": BASE, "grid": {"beta": [0.5, 1.0], "latent_dim": [2, 4]}}))
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "mnist_vae", "sweep", str(spec), "--out", str(out)]
    # Its own session, so the kill takes Ray's processes with the driver, as a killed job's would go.
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 400
    finished = []
    while not finished and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
        # Finished: scores written and the resume state removed, the run's last step.
        finished = [m for m in sorted(out.glob("trials/*/metrics.json")) if not (m.parent / "backup").exists()]
    assert finished, proc.stderr.read()[-3000:] if proc.poll() is not None else "no trial finished in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # The driver under it shuts Ray down on its own (see process_group); until then it holds the folder.
    assert _wait_for_no_processes(proc.pid) == []
    first = finished[0].parent
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 trials" in result.stdout
    rows = _rows(out / "results.csv")
    assert sorted((r["beta"], r["latent_dim"]) for r in rows) == [("0.5", "2"), ("0.5", "4"), ("1.0", "2"), ("1.0", "4")]
    assert {r["status"] for r in rows} <= {"finished", "stopped early"}
    done = [r for r in rows if r["status"] == "finished"]
    stopped = [r for r in rows if r["status"] == "stopped early"]
    assert done, "ASHA lets the best trial at each rung go on"
    for row in done:
        assert_complete_run(out / "trials" / row["trial"], epochs=2)
        metrics = json.loads((out / "trials" / row["trial"] / "metrics.json").read_text())
        assert float(row["test_negative_elbo"]) == pytest.approx(metrics["test"]["loss"])
    for row in stopped:  # stopped at the grace epoch's rung, before the last
        assert row["epochs"] == "1" and row["test_negative_elbo"] == "nan"
    # The trial that had finished before the kill was not trained again.
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == before
    assert (out / "sweep.png").stat().st_size > 0
    # Ranked by the best validation -ELBO.
    values = [float(r["best_val_negative_elbo"]) for r in rows]
    assert values == sorted(values)
    # Ray reuses a worker process for later trials: the last one to start scores as a fresh run would.
    from mnist_vae.config import Config
    from mnist_vae.train import train

    last = max(done, key=lambda r: (out / "trials" / r["trial"] / "config.json").stat().st_mtime_ns)
    config = Config.load(out / "trials" / last["trial"] / "config.json")
    assert train(config, tmp_path / "fresh", verbose=0)["test"]["loss"] == float(last["test_negative_elbo"])


def _session_processes(sid):
    """Live processes of session ``sid`` (the test started the sweep in a session of its own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
                found.append(f"{entry} {cmdline[:100]}")
    return found


def _start_sweep(command):
    """``vae sweep`` in a session of its own, once Ray runs a trial."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while (not any("ImplicitFunc" in p for p in _session_processes(proc.pid)) and proc.poll() is None
           and time.time() < deadline):
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    return proc


def _wait_for_no_processes(sid, seconds=30):
    deadline = time.time() + seconds
    while (left := _session_processes(sid)) and time.time() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='Ray Tune is not installed (pip install ".[sweep]")')
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_ray_processes_end_with_a_killed_or_interrupted_sweep_and_a_finished_one_prints_no_traceback(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": BASE, "grid": {"beta": [0.5, 1.0]}, "early_stopping": "none"}))
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "mnist_vae", "sweep", str(spec), "--out", str(out)]

    # One driver per sweep folder: while another holds it, `vae sweep` is refused at once.
    with locked(RunDir(out), "another vae sweep", create=True):
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "is in use by another vae process" in second.stderr, second.stderr[-2000:]
    assert [p.name for p in out.iterdir()] == []

    # SIGKILL of the `vae sweep` process alone: the driver under it shuts Ray down.
    proc = _start_sweep(command)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _wait_for_no_processes(proc.pid) == []

    # Ctrl-C: exit 130, the command that continues, and no process left.
    proc = _start_sweep(command)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert f"the same command again (`vae sweep {spec} --out {out}`) continues the sweep" in err
    assert _wait_for_no_processes(proc.pid, 10) == []

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert {r["status"] for r in _rows(out / "results.csv")} == {"finished"}
