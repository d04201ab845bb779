"""IDX parsing, the dataset registry and its search order, downloads, splits and batches."""

import dataclasses
import functools
import gzip
import http.server
import threading

import numpy as np
import pytest

from conftest import idx_bytes, write_fake_dataset
from mnist_vae.errors import UserError
from mnist_vae import data
from mnist_vae.data import DataError
from mnist_vae.observation import from_model_input


def test_parse_idx_round_trip():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(data.parse_idx(idx_bytes(array)), array)


def test_parse_idx_reads_wider_big_endian_types():
    content = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (1).to_bytes(4, "big", signed=True) + (-7).to_bytes(4, "big", signed=True)
    np.testing.assert_array_equal(data.parse_idx(content), [1, -7])


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b"\x01\x02" + b[2:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b[:2], "not an IDX file"),
    ],
)
def test_parse_idx_rejects_damaged_content(mangle, message):
    good = idx_bytes(np.zeros((3, 28, 28)))
    with pytest.raises(DataError, match=message):
        data.parse_idx(mangle(good), name="images.idx")


def test_parse_idx_checks_dimension_count():
    with pytest.raises(DataError, match="expected 1 dimensions"):
        data.parse_idx(idx_bytes(np.zeros((3, 2))), ndim=1)


def test_read_idx_names_the_file_for_truncated_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28))))[:-20])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        data.read_idx(path)


def test_read_idx_reads_raw_and_gzip_alike(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "b.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), data.read_idx(tmp_path / "b.gz"))


def test_read_idx_checksum_mismatch_and_missing_file(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(DataError, match="checksum mismatch"):
        data.read_idx(path, sha256="0" * 64)
    with pytest.raises(DataError, match="file not found"):
        data.read_idx(tmp_path / "nope")


def test_shipped_mnist_loads_with_verified_checksums_and_proper_splits():
    splits = data.load_splits("mnist", validation_size=5000)
    assert splits.train.images.shape == (55000, 32, 32, 1)
    assert splits.validation.images.shape == (5000, 32, 32, 1)
    assert splits.test.images.shape == (10000, 32, 32, 1)
    assert splits.train.images.dtype == np.float32
    for split in (splits.train, splits.validation, splits.test):
        assert 0.0 <= split.images.min() and split.images.max() <= 1.0
        # the 2-pixel border is padding: exactly zero
        assert not split.images[:, :2].any() and not split.images[:, -2:].any()
        assert not split.images[:, :, :2].any() and not split.images[:, :, -2:].any()
        assert set(np.unique(split.labels)) == set(range(10))
    # The validation slice is the end of the training file, the training split its start.
    raw_train, _ = data.load_raw(splits.spec, "train", data.locate(splits.spec))
    np.testing.assert_array_equal(from_model_input(splits.validation.images)[..., 0] * 255, raw_train[55000:])
    np.testing.assert_array_equal(from_model_input(splits.train.images[:3])[..., 0] * 255, raw_train[:3])


def test_limit_takes_the_first_training_images_and_never_touches_validation():
    full = data.load_splits("mnist", validation_size=100)
    small = data.load_splits("mnist", validation_size=100, limit=300)
    assert len(small.train) == 300
    np.testing.assert_array_equal(small.train.images, full.train.images[:300])
    np.testing.assert_array_equal(small.validation.images, full.validation.images)
    with pytest.raises(UserError, match="--validation-size"):
        data.load_splits("mnist", validation_size=60000)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(UserError, match=r"choose one of \['cifar10', 'colour_mnist', 'fashion_mnist', 'mnist'\]"):
        data.get_spec("cifar")


def _fake_spec(sums, **changes):
    spec = dataclasses.replace(data.DATASETS["fashion_mnist"], name="fake", sha256=sums, system_dirs=(), urls=())
    return dataclasses.replace(spec, **changes)


def test_search_order_data_dir_then_env_then_system_then_cache(tmp_path, monkeypatch):
    dirs = {name: tmp_path / name for name in ("given", "env", "system", "cache")}
    sums = None
    for folder in dirs.values():
        sums = write_fake_dataset(folder)  # same seed: same content, same checksums
    spec = _fake_spec(sums, system_dirs=(str(dirs["system"]),))
    monkeypatch.setenv(data.ENV_DATA_DIR, str(dirs["env"]))
    assert data.locate(spec, data_dir=dirs["given"], cache_dir=dirs["cache"]) == dirs["given"]
    assert data.locate(spec, cache_dir=dirs["cache"]) == dirs["env"]
    monkeypatch.delenv(data.ENV_DATA_DIR)
    assert data.locate(spec, cache_dir=dirs["cache"]) == dirs["system"]
    assert data.locate(_fake_spec(sums), cache_dir=dirs["cache"]) == dirs["cache"]


def test_missing_dataset_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    spec = _fake_spec({}, install_hint="apt-get install dataset-fashion-mnist")
    with pytest.raises(DataError) as info:
        data.locate(spec, cache_dir=tmp_path / "cache", download=False)
    message = str(info.value)
    assert "--data-dir" in message and data.ENV_DATA_DIR in message and "apt-get install" in message
    assert "\n" not in message


@pytest.fixture
def http_server(tmp_path):
    """A file server on 127.0.0.1 serving tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_from_a_local_server_verifies_and_caches(http_server, tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    served, url = http_server
    sums = write_fake_dataset(served, n_train=30, n_test=10)
    spec = _fake_spec(sums, urls=(url,))
    cache = tmp_path / "cache"
    folder = data.locate(spec, cache_dir=cache)
    assert folder == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in sums)
    images, labels = data.load_raw(spec, "train", folder)
    assert images.shape == (30, 28, 28) and labels.shape == (30,)
    # Second lookup finds the cache: nothing more is fetched even with the server gone.
    assert data.locate(_fake_spec(sums, urls=("http://127.0.0.1:9/",)), cache_dir=cache) == cache


def test_download_with_wrong_checksum_keeps_nothing(http_server, tmp_path):
    served, url = http_server
    sums = write_fake_dataset(served)
    bad = dict(sums, **{"train-images-idx3-ubyte": "f" * 64})
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="download failed.*checksum mismatch"):
        data.locate(_fake_spec(bad, urls=(url,)), cache_dir=cache)
    assert not list(cache.glob("train-images*"))  # no partial or wrong file left behind


def test_download_failure_is_one_clear_line(tmp_path):
    spec = _fake_spec({}, urls=("http://127.0.0.1:9/",), install_hint="apt-get install dataset-fashion-mnist")
    with pytest.raises(DataError) as info:
        data.locate(spec, cache_dir=tmp_path / "cache", timeout=5)
    assert "download failed" in str(info.value) and "apt-get install" in str(info.value)


@pytest.mark.skipif(not data.has_all("/usr/share/datasets/fashion-mnist", data.DATASETS["fashion_mnist"]),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package():
    splits = data.load_splits("fashion_mnist", validation_size=1000, limit=10)
    assert splits.test.images.shape == (10000, 32, 32, 1)
    assert len(splits.spec.class_names) == 10


def test_batches_cover_every_image_once_in_an_epoch_dependent_order():
    images = np.arange(10, dtype="float32").reshape(10, 1, 1, 1)
    batches = data.ImageBatches(images, batch_size=4, shuffle=True, seed=3)
    assert len(batches) == 3

    def one_pass():
        return np.concatenate([batches[i]["images"].ravel() for i in range(len(batches))])

    first, second = one_pass(), one_pass()  # each request for batch 0 starts the next epoch
    assert sorted(first) == sorted(second) == list(range(10))
    assert not np.array_equal(first, second)
    batches.restart(1)  # a resumed run starting at epoch 1 sees epoch 1's order
    np.testing.assert_array_equal(one_pass(), second)
    batches.restart(0)
    np.testing.assert_array_equal(one_pass(), first)
    plain = data.ImageBatches(images, batch_size=4)
    np.testing.assert_array_equal(np.concatenate([plain[i]["images"].ravel() for i in range(3)]), np.arange(10))


def test_an_explicit_data_dir_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(DataError, match="--data-dir .*no such folder"):
        data.load_splits("mnist", data_dir=tmp_path / "typo")


def test_files_of_the_wrong_image_size_or_labels_are_rejected(tmp_path):
    sums = write_fake_dataset(tmp_path)
    spec = _fake_spec(sums)
    images = np.zeros((4, 20, 20))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    with pytest.raises(DataError, match="expected uint8 28x28 images"):
        data.load_raw(_fake_spec({}), "train", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(20, 12))))
    with pytest.raises(DataError, match="label 12 outside 0..9"):
        data.load_raw(_fake_spec({}), "test", tmp_path)
    assert spec.name == "fake"


def test_binarize_once_is_fixed_and_matches_the_grey_levels():
    grey = np.full((200, 32, 32, 1), 0.3, "float32")
    grey[:, :2] = 0.0  # padding stays zero
    a, b = data.binarize_once(grey), data.binarize_once(grey)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 1.0} and not a[:, :2].any()
    assert abs(a[:, 2:].mean() - 0.3) < 0.01
    assert data.held_out_images(grey, "none") is grey


def test_dynamic_binarisation_redraws_every_epoch_and_reproduces_on_restart():
    grey = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
    batches = data.ImageBatches(grey, batch_size=8, shuffle=True, seed=1, binarize=True)
    first, second = batches[0]["images"], batches[0]["images"]  # two epochs
    assert set(np.unique(first)) <= {0.0, 1.0}
    assert not np.array_equal(first, second)
    batches.restart(1)
    np.testing.assert_array_equal(batches[0]["images"], second)
    with pytest.raises(ValueError, match="shuffle=True"):
        data.ImageBatches(grey, 8, binarize=True)


@pytest.mark.skipif(not data.has_all("/usr/share/datasets/fashion-mnist", data.DATASETS["fashion_mnist"]),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_trains_evaluates_and_plots_end_to_end(tmp_path):
    import json

    from conftest import run_cli

    out = tmp_path / "fashion"
    result = run_cli("train", "--dataset", "fashion_mnist", "--conditional", "--out", out, "--test-limit", "500", "--limit", "256",
                     "--epochs", "1", "--validation-size", "500", "--grid-size", "3", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert run_cli("evaluate", out, "--iw-samples", "3", "--limit", "10").returncode == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["dataset"] == "fashion_mnist" and "Ankle boot" in report["per_class"]  # the first test image
    assert (out / "plots" / "analogies.png").is_file()


def test_sharded_batches_put_together_are_the_whole_batches():
    # Two processes under keras.distribution feed one global batch between them: the same
    # images, labels and Bernoulli draws as one process, in order.
    rng = np.random.default_rng(0)
    images = rng.random((100, 32, 32, 1)).astype("float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, 100)]
    kwargs = dict(batch_size=20, shuffle=True, seed=3, binarize=True, labels=labels)
    whole = data.ImageBatches(images, **kwargs)
    parts = [data.ImageBatches(images, shard=(i, 2), **kwargs) for i in range(2)]
    for epoch in range(2):
        for b in (whole, *parts):
            b.restart(epoch)
        for index in range(len(whole)):
            full, halves = whole[index], [p[index] for p in parts]
            for key in ("images", "labels"):
                np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), full[key])
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        data.ImageBatches(images, batch_size=20, shard=(0, 3))[0]


def test_keras_input_is_the_same_batches_in_order_without_the_autotuner():
    # On TensorFlow fit gets a tf.data pipeline built from the batches (data.keras_input): each
    # pass over it must be the next epoch of ImageBatches, labels included, and tf.data's
    # autotuner must be off (its thread held the end of epochs for seconds; see keras_input).
    import keras

    rng = np.random.default_rng(0)
    images = rng.random((10, 4, 4, 1)).astype("float32")
    labels = np.eye(3, dtype="float32")[rng.integers(0, 3, 10)]
    kwargs = dict(batch_size=4, shuffle=True, seed=3, binarize=True, labels=labels)
    pipeline = data.keras_input(data.ImageBatches(images, **kwargs))
    if keras.backend.backend() != "tensorflow":
        assert isinstance(pipeline, data.ImageBatches)
        return
    assert pipeline.options().autotune.enabled is False
    assert int(pipeline.cardinality()) == 3
    expected = data.ImageBatches(images, **kwargs)
    for _ in range(2):  # two epochs: a new iterator starts the next one
        got = [{key: value.numpy() for key, value in batch.items()} for batch in pipeline]
        want = [expected[i] for i in range(len(expected))]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            for key in ("images", "labels"):
                np.testing.assert_array_equal(g[key], w[key])
    plain = data.keras_input(data.ImageBatches(images, batch_size=4))
    np.testing.assert_array_equal(np.concatenate([b["images"].numpy() for b in plain]), images)
