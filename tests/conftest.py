"""Shared fixtures: small real-MNIST runs and helpers for fake IDX datasets."""

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnist_vae  # noqa: F401  registers the Keras classes
from mnist_vae.config import Config

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


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run ``python -m mnist_vae ARGS`` in a fresh process; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mnist_vae", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def tiny_config(**overrides):
    """A config that trains in seconds on real MNIST."""
    values = dict(limit=256, epochs=1, validation_size=500, batch_size=64, grid_size=4)
    values.update(overrides)
    return Config(**values)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One finished tiny run, trained in-process; tests must not modify it."""
    from mnist_vae.train import train

    out = tmp_path_factory.mktemp("run")
    metrics = train(tiny_config(epochs=2), out, verbose=0)
    return out, metrics
