"""Colour images: the CIFAR-10 reader on archives written in the official format, and colour MNIST."""

import dataclasses
import hashlib
import io
import json
import os
import pickle
import tarfile
import http.server

import numpy as np
import pytest

from conftest import run_cli
from mnist_vae import data
from mnist_vae.config import Config
from mnist_vae.data import DataError
from mnist_vae.errors import UserError

PER_BATCH = 4


def _batch(rng, n, first_label=0):
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # channel planes, as the archive stores them
    return {b"batch_label": b"test batch", b"labels": [(first_label + i) % 10 for i in range(n)],
            b"data": images.reshape(n, 3072), b"filenames": [b"x.png"] * n}


def write_cifar_archive(path, batch=None, seed=0):
    """A cifar-10-python.tar.gz laid out like the official one, with PER_BATCH images per batch; returns the batches."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {name: _batch(rng, PER_BATCH, i) for i, name in enumerate(names)}
    if batch is not None:
        batches.update(batch)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in batches.items():
            raw = content if isinstance(content, bytes) else pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return batches


def _spec_for(archive):
    raw = archive.read_bytes()
    return dataclasses.replace(data.DATASETS["cifar10"], name="cifar_test", urls=(),
                               sha256={data.CIFAR_ARCHIVE: hashlib.sha256(raw).hexdigest()},
                               sizes={data.CIFAR_ARCHIVE: len(raw)})


def test_the_cifar_reader_turns_planes_into_pixels(tmp_path, monkeypatch):
    folder = tmp_path / "cifar"
    folder.mkdir()
    batches = write_cifar_archive(folder / data.CIFAR_ARCHIVE)
    monkeypatch.setitem(data.DATASETS, "cifar_test", _spec_for(folder / data.CIFAR_ARCHIVE))
    splits = data.load_splits("cifar_test", validation_size=2, data_dir=folder)
    assert splits.train.images.shape == (5 * PER_BATCH - 2, 32, 32, 3) and splits.test.images.shape == (PER_BATCH, 32, 32, 3)
    planes = batches["test_batch"][b"data"].reshape(PER_BATCH, 3, 32, 32)
    np.testing.assert_array_equal(splits.test.images[1, 5, 7] * 255, planes[1, :, 5, 7])  # (R, G, B) of one pixel
    assert list(splits.test.labels) == batches["test_batch"][b"labels"]


def test_the_real_archives_checksum_is_enforced(tmp_path):
    folder = tmp_path / "cifar"
    folder.mkdir()
    write_cifar_archive(folder / data.CIFAR_ARCHIVE)
    with pytest.raises(DataError, match="but cifar-10-python.tar.gz has 170,498,071"):
        data.load_splits("cifar10", data_dir=folder)
    spec = dataclasses.replace(_spec_for(folder / data.CIFAR_ARCHIVE), sha256={data.CIFAR_ARCHIVE: "0" * 64})
    with pytest.raises(DataError, match="checksum mismatch"):
        data.READERS["cifar_python"].read(spec, folder)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mnist-vae-pwned",))


@pytest.mark.parametrize("bad,message", [
    ({"test_batch": pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2)}, "refusing to load"),
    ({"test_batch": b"not a pickle at all"}, "not a readable CIFAR batch"),
    ({"test_batch": {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}}, "not a readable CIFAR batch"),
    ({"test_batch": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}}, "label 12 outside 0..9"),
])
def test_hostile_or_damaged_batches_are_refused_without_running_code(bad, message, tmp_path):
    folder = tmp_path / "cifar"
    folder.mkdir()
    write_cifar_archive(folder / data.CIFAR_ARCHIVE, batch=bad)
    with pytest.raises(DataError, match=message):
        data.READERS["cifar_python"].read(_spec_for(folder / data.CIFAR_ARCHIVE), folder)
    assert not os.path.exists("/tmp/mnist-vae-pwned")


def test_a_missing_archive_names_the_file_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        data.load_splits("cifar10", data_dir=tmp_path / "empty")
    with pytest.raises(DataError, match="kriz/cifar-10-python.tar.gz"):
        data.locate(data.DATASETS["cifar10"], cache_dir=tmp_path / "cache", download=False)


def test_the_archive_downloads_into_the_cache_from_a_loopback_server(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    write_cifar_archive(served / data.CIFAR_ARCHIVE)
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = dataclasses.replace(_spec_for(served / data.CIFAR_ARCHIVE),
                                   urls=(f"http://127.0.0.1:{server.server_address[1]}/",))
        cache = tmp_path / "cache"
        assert data.locate(spec, cache_dir=cache) == cache
        assert (cache / data.CIFAR_ARCHIVE).read_bytes() == (served / data.CIFAR_ARCHIVE).read_bytes()
        wrong = dataclasses.replace(spec, sha256={data.CIFAR_ARCHIVE: "0" * 64})
        with pytest.raises(DataError, match="download failed"):
            data.locate(wrong, cache_dir=tmp_path / "cache2")
        assert not any((tmp_path / "cache2").iterdir()), "a file that fails its check is not kept"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_colour_mnist_is_deterministic_and_keeps_digits_visible():
    raw = data.read_idx_dataset(data.DATASETS["mnist"], data.locate(data.DATASETS["mnist"]))
    images, labels = raw[1]
    colour = data.colourise(images[:200], "test")
    np.testing.assert_array_equal(colour, data.colourise(images[:200], "test"))
    assert colour.shape == (200, 32, 32, 3) and colour.dtype == np.uint8
    background, digit = colour[:, 0, 0].astype(int), None
    # The brightest grey pixel of each digit is 255: there the colour is the digit colour.
    flat = np.pad(images[:200], ((0, 0), (2, 2), (2, 2))).reshape(200, -1)
    digit = colour.reshape(200, -1, 3)[np.arange(200), flat.argmax(axis=1)].astype(int)
    assert (np.minimum(abs(digit - background), 256 - abs(digit - background)) >= 64).all()
    splits = data.load_splits("colour_mnist", validation_size=1000, limit=10)
    assert splits.test.images.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(splits.test.labels, labels)
    np.testing.assert_array_equal(splits.test.images[:200] * 255, colour)


def test_colour_needs_a_colour_likelihood():
    assert Config(dataset="colour_mnist").resolved_likelihood() == "logistic_mixture"
    with pytest.raises(UserError, match="3-channel images and a Bernoulli models single-channel pixels"):
        Config(dataset="colour_mnist", likelihood="bernoulli").validate()
    with pytest.raises(UserError, match="autoregressive head models single-channel"):
        Config(dataset="colour_mnist", architecture="resnet_ar", binarize="dynamic").validate()


@pytest.mark.slow
def test_cli_trains_and_evaluates_colour_mnist_in_bits_per_dim(tmp_path):
    out = tmp_path / "colour"
    result = run_cli("train", "--dataset", "colour_mnist", "--out", out, "--test-limit", "200", "--limit", "256", "--epochs", "1",
                     "--validation-size", "200", "--grid-size", "3", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["likelihood"] == "logistic_mixture" and "32x32x3 sub-pixels" in metrics["units"]
    result = run_cli("evaluate", out, "--iw-samples", "3", "--limit", "10")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "evaluation.json").read_text())
    # A normalised likelihood of 8-bit sub-pixels: bits/dim is positive and finite.
    assert 0 < report["iw_nll_bits_per_dim"] < 20 and "8-bit levels" in report["protocol"]
    assert run_cli("plot", out).returncode == 0
