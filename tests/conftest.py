"""Shared fixtures: small real-MNIST runs and helpers for fake IDX datasets."""

import contextlib
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest


def _share_the_cores():
    """Give each pytest-xdist worker its share of the cores, before any math library starts its threads.

    Every worker's TensorFlow, PyTorch and XLA would otherwise start one thread per core, and their
    spinning thread pools fight: on two cores a torch test ran 4x slower beside a TensorFlow one
    than alone. The children a test starts inherit the setting; one the user set is kept.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(name, str(threads))
    if threads == 1:
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


_share_the_cores()

import numpy as np  # noqa: E402

import mnist_vae  # noqa: E402, F401  registers the Keras classes
from mnist_vae.config import Config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def idx_bytes(array):
    """Encode a uint8 array as IDX bytes (the format of the MNIST files)."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_fake_dataset(folder, n_train=40, n_test=20, seed=0, compress=True):
    """Write four small MNIST-format files; returns {file name: SHA-256 of the content}."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    sums = {}
    for name, array in arrays.items():
        content = idx_bytes(array)
        sums[name] = hashlib.sha256(content).hexdigest()
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
    return sums


PROMISED = [
    "models/vae.keras", "models/encoder.keras", "models/decoder.keras", "checkpoint.keras",
    "config.json", "metrics.json", "history.csv",
    "plots/latent_scatter.png", "plots/manifold.png", "plots/reconstructions.png", "plots/samples.png",
    "plots/interpolation.png",
]
# A conditional run draws per-class manifolds and analogies instead of the one manifold.
PROMISED_CONDITIONAL = [name for name in PROMISED if name != "plots/manifold.png"] + [
    "plots/class_manifolds.png", "plots/analogies.png",
]


def assert_complete_run(out, epochs, user_files=()):
    """Every promised file of a finished run is there and consistent; returns its metrics.

    ``user_files``: paths (relative to ``out``) the user put in the run's folders.
    """
    conditional = json.loads((out / "config.json").read_text())["conditional"]
    for name in PROMISED_CONDITIONAL if conditional else PROMISED:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    if conditional:
        assert not (out / "plots/manifold.png").exists(), "one manifold per class, not an unconditional one"
    backup = sorted(str(p.relative_to(out)) for p in (out / "backup").rglob("*")) if (out / "backup").exists() else []
    assert backup == sorted(f for f in user_files if f.startswith("backup/")), "the resume state is removed"
    assert not (out / ".vae.lock").exists(), "the lock is released and its file removed"
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("train", "validation", "test"):
        terms = metrics[split]
        assert np.isfinite(terms["loss"]) and terms["kl_loss"] >= 0
        assert terms["loss"] == pytest.approx(terms["reconstruction_loss"] + terms["kl_loss"], rel=1e-4)
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(epochs))
    return metrics


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run ``python -m mnist_vae ARGS`` in a fresh process; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mnist_vae", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def refused_here(*args):
    """``vae ARGS`` in this process, for a refusal that ends before anything trains: ``run_cli``'s result without a process start-up (4 s of imports).

    The entry point is the one ``python -m mnist_vae`` calls, so status and messages are the same.
    """
    from mnist_vae import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in args])
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def tiny_config(**overrides):
    """A config that trains in seconds on real MNIST (and scores 500 of the test images)."""
    values = dict(limit=256, epochs=1, validation_size=500, batch_size=64, grid_size=4, test_limit=500)
    values.update(overrides)
    return Config(**values)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One finished tiny run, trained in-process; tests must not modify it."""
    from mnist_vae.train import train

    out = tmp_path_factory.mktemp("run")
    metrics = train(tiny_config(epochs=2), out, verbose=0)
    return out, metrics


@pytest.fixture
def make_unwritable():
    """Make a folder refuse new files, as a read-only or immutable folder does; undone after the test.

    chmod is enough for an ordinary user; root ignores permission bits, so there the folder is
    made immutable (chattr +i), which binds root too. Skips where neither is possible.
    """
    undo = []

    def apply(folder):
        folder = Path(folder)
        if os.geteuid() != 0:
            mode = folder.stat().st_mode
            folder.chmod(0o555)
            undo.append(lambda: folder.chmod(mode))
        elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
            undo.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=True))
        else:
            pytest.skip("cannot make a folder unwritable here (root without chattr)")
        try:
            (folder / ".probe").touch()
        except OSError:
            return folder
        pytest.skip("the folder is still writable after chmod/chattr on this file system")

    yield apply
    for step in reversed(undo):
        step()


@pytest.fixture
def small_filesystem(tmp_path):
    """A fresh 3 MB tmpfs (root only; skipped elsewhere); unmounted after the test."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def pytest_collection_modifyitems(items):
    """Run the slow end-to-end tests first, so that under xdist the short ones fill the gaps at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: two workers more than the cores, since many tests wait on a child process, a server, a browser
    or Ray (a sweep test alone used 27 s of CPU in 71 s, and 33 s in 471 s beside the rest of the suite)."""
    return (os.cpu_count() or 1) + 2
