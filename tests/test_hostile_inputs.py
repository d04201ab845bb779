"""The cases a hostile probe found: folders that only look like runs, a replacement that cannot
finish, system folders and broken links as --out, foreign Host headers, inflating model archives,
code in a model file, runaway sweeps, and messages whose advice would lose work. Each checks the
files before and after: a refusal touches nothing."""

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import tracemalloc
import zipfile

import keras
import pytest

from conftest import assert_complete_run, run_cli, tiny_config, write_fake_dataset
from mnist_vae import archive, data, explore, serve
from mnist_vae.errors import UserError
from mnist_vae.archive import load_model
from mnist_vae.replacing import remove_temporaries
from mnist_vae.rundir import RunDir, check_output_folder
from mnist_vae.train import train
from test_robustness import _assert_one_line, _copy_run, _main, _snapshot


# --overwrite replaces a run this package wrote, and nothing else.

@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_own_config_json_is_not_a_run_and_survives_overwrite(tmp_path, capfd, overwrite):
    out = tmp_path / "work"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"epochs": 5, "latent_dim": 8}))  # a --config file of the user's
    (out / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    status, err = _main(capfd, "train", "--out", out, "--limit", "64", *(["--overwrite"] if overwrite else []))
    _assert_one_line(status, err, "that no `vae train` wrote")
    assert "they are kept: choose another --out" in err
    assert _snapshot(tmp_path) == before


def test_another_tools_event_files_are_not_a_run(tmp_path, capfd):
    out = tmp_path / "work"
    (out / "logs" / "train").mkdir(parents=True)
    (out / "logs" / "train" / "events.out.tfevents.1700000000.host.42.0.v2").write_bytes(b"someone else's")
    before = _snapshot(tmp_path)
    for flags in ([], ["--overwrite"]):
        status, err = _main(capfd, "train", "--out", out, "--limit", "64", *flags)
        _assert_one_line(status, err, "that no `vae train` wrote")
        assert _snapshot(tmp_path) == before


def test_an_overwrite_that_cannot_remove_a_file_leaves_the_old_run_whole(trained_run, tmp_path, capfd, make_unwritable):
    out = _copy_run(trained_run, tmp_path)
    make_unwritable(out / "plots" / "samples.png")  # immutable: it can be neither renamed nor deleted
    before = _snapshot(out)
    status, err = _main(capfd, "train", "--out", out, "--overwrite", "--limit", "64")
    _assert_one_line(status, err, f"{out / 'plots' / 'samples.png'} cannot be moved")
    assert "nothing was deleted" in err
    assert _snapshot(out) == before
    assert not list(out.glob(".replaced.*"))


def test_an_overwrite_moves_the_old_run_aside_and_deletes_it_once_the_new_one_started(trained_run, tmp_path):
    out = _copy_run(trained_run, tmp_path)
    seen = []

    class Look(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.extend(out.glob(".replaced.*"))

    train(tiny_config(), out, overwrite=True, verbose=0, callbacks=[Look()])
    assert seen == [], "the old run is gone by the first epoch"
    assert not list(out.glob(".replaced.*"))
    assert_complete_run(out, epochs=1)


def test_what_a_killed_overwrite_set_aside_is_removed_by_name_at_the_next_lock(trained_run, tmp_path):
    out = _copy_run(trained_run, tmp_path)
    aside = out / ".replaced.abcd1234"
    (aside / "models").mkdir(parents=True)
    shutil.copy(out / "models" / "vae.keras", aside / "models" / "vae.keras")
    (aside / "models" / "mine.txt").write_text("not a run file")
    remove_temporaries(RunDir(out))
    assert not (aside / "models" / "vae.keras").exists()
    assert (aside / "models" / "mine.txt").read_text() == "not a run file"


def test_system_folders_and_the_home_folder_are_refused_as_out(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HOME", str(tmp_path))
    for folder, what in [("/", "the file system's root"), ("/usr", "a top-level system folder"),
                         (str(tmp_path), "your home folder")]:
        with pytest.raises(UserError, match=what):
            check_output_folder(folder)
    check_output_folder("/app")  # a project folder at the top is no system folder
    before = _snapshot(tmp_path)
    status, err = _main(capfd, "train", "--out", tmp_path, "--limit", "64")
    _assert_one_line(status, err, "is your home folder")
    assert f"--out {tmp_path / 'vae-run'}" in err
    assert _snapshot(tmp_path) == before and not (tmp_path / ".vae.lock").exists()
    spec = tmp_path.parent / "spec.json"
    spec.write_text(json.dumps({"base": {"epochs": 1}, "grid": {"beta": [1.0]}}))
    status, err = _main(capfd, "sweep", spec, "--out", "/usr")
    _assert_one_line(status, err, "is a top-level system folder")


def test_symlink_loops_and_dangling_links_as_out_are_named_as_such(tmp_path, capfd):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    before = _snapshot(tmp_path)
    for out, message in [(loop, "a symlink that loops back on itself"),
                         (dangling, f"a dangling symlink (to {tmp_path / 'nowhere'}, which does not exist)"),
                         (dangling / "run", "a dangling symlink")]:
        status, err = _main(capfd, "train", "--out", out, "--limit", "64")
        _assert_one_line(status, err, message)
        assert "File exists" not in err
    assert _snapshot(tmp_path) == before and not (tmp_path / "nowhere").exists()


# vae serve answers only requests that name it.

def test_the_explorer_refuses_a_foreign_host_and_names_the_run_not_its_path(trained_run):
    from fastapi.testclient import TestClient

    explorer = explore.Explorer.from_run(trained_run[0])
    app = serve.create_app(explorer, serve.allowed_hosts("127.0.0.1"))
    for path in ("/", "/api/info", "/api/test/0"):
        response = TestClient(app, base_url="http://evil.example").get(path)
        assert response.status_code == 400 and "Invalid host header" in response.text, path
        assert TestClient(app, base_url="http://127.0.0.1:8000").get(path).status_code == 200, path
    refused = TestClient(app, base_url="http://evil.example").post("/api/decode", json={"z": [[0.0, 0.0]]})
    assert refused.status_code == 400
    for host in ("localhost", "[::1]"):
        assert TestClient(app, base_url=f"http://{host}:8000").get("/api/info").status_code == 200
    info = TestClient(app, base_url="http://localhost").get("/api/info").json()
    assert info["name"] == trained_run[0].name and os.sep not in info["name"]
    assert serve.allowed_hosts("0.0.0.0", ["box.lan"])[-2:] == ["0.0.0.0", "box.lan"]
    assert "[::]" in serve.allowed_hosts("::")


# Model files are opened with bounds, by one loader.

def _zip(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, size in entries:
            with zf.open(name, "w", force_zip64=True) as f:
                for _ in range(size // (1 << 20)):
                    f.write(bytes(1 << 20))
                f.write(bytes(size % (1 << 20)))
    return path


def test_an_inflating_model_archive_is_refused_before_keras_reads_it(tmp_path):
    bomb = _zip(tmp_path / "bomb.keras", [("metadata.json", 64), ("config.json", 64 << 20), ("model.weights.h5", 10)])
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"config.json inflates to 67,108,864 bytes, past the 4,194,304"):
            load_model(bomb)
        assert tracemalloc.get_traced_memory()[1] < 10 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("entries, message", [
    ([("config.json", 10)] + [(f"x{i}", 1) for i in range(20)], "21 entries in the archive"),
    ([("config.json", 10), ("../../etc/passwd", 10)], "holds '../../etc/passwd', which no Keras model file"),
    ([("metadata.json", 10), ("model.weights.h5", 10)], "has no config.json"),
    ([("config.json", 10), ("model.weights.h5", (512 << 20) + 1)], "model.weights.h5 inflates to 536,870,913"),
])
def test_model_archives_beyond_the_bounds_are_refused_in_one_line(tmp_path, entries, message):
    path = _zip(tmp_path / "model.keras", entries)
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")) as info:
        archive.check_model_archive(path)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_the_largest_model_the_config_allows_fits_the_archive_bounds(tmp_path):
    from mnist_vae.config import BOUNDS
    from mnist_vae.models import build_vae

    vae = build_vae(image_shape=(32, 32, 1), latent_dim=BOUNDS["latent_dim"][1], architecture="resnet_ar", seed=0,
                    num_classes=10, pixel_layers=BOUNDS["pixel_layers"][1])
    vae.compile(optimizer="adam")
    vae.optimizer.build(vae.trainable_variables)
    vae.save(tmp_path / "largest.keras")
    archive.check_model_archive(tmp_path / "largest.keras")
    sizes = {i.filename: i.file_size for i in zipfile.ZipFile(tmp_path / "largest.keras").infolist()}
    assert sizes["model.weights.h5"] * 2 < archive.MAX_WEIGHT_BYTES and sizes["config.json"] * 10 < archive.MAX_JSON_BYTES


def test_every_command_that_opens_a_model_refuses_a_bomb(trained_run, tmp_path, capfd):
    run = _copy_run(trained_run, tmp_path)
    _zip(run / "models" / "vae.keras", [("metadata.json", 64), ("config.json", 64 << 20)])
    classifier = _zip(tmp_path / "classifier.keras", [("config.json", 64 << 20)])
    before = _snapshot(tmp_path)
    for argv in (["evaluate", run, "--iw-samples", "2", "--limit", "10"], ["plot", run], ["export", run],
                 ["serve", run, "--port", "0"],
                 ["evaluate", trained_run[0], "--sample-quality", "--classifier", classifier, "--samples", "200"]):
        status, err = _main(capfd, *argv)
        _assert_one_line(status, err, "config.json inflates to 67,108,864 bytes")
        assert _snapshot(tmp_path) == before, argv


def test_a_model_file_holding_code_is_not_loaded_and_the_bypass_is_not_advised(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(UserError) as info:
        load_model(tmp_path / "lambda.keras")
    assert "holds Python code" in str(info.value) and "safe_mode" not in str(info.value)


# vae sweep: a bounded number of trials.

def test_a_sweep_of_too_many_trials_is_refused_naming_the_cap(tmp_path):
    from mnist_vae.sweep import MAX_TRIALS, spec_from_dict

    with pytest.raises(UserError, match=r"make 10,000 trials, and a sweep runs at most 1,000"):
        spec_from_dict({"grid": {"beta": [0.1 * (i + 1) for i in range(100)], "seed": list(range(100))}})
    fields = ("seed", "latent_dim", "batch_size", "grid_size", "kl_warmup", "lr_warmup", "steps_per_execution",
              "validation_size")
    # 10^8 grid points: refused from the lists' lengths, before any point is made (that would hang).
    with pytest.raises(UserError, match=f"make 100,000,000 trials, and a sweep runs at most {MAX_TRIALS:,}"):
        spec_from_dict({"grid": {name: list(range(1, 11)) for name in fields}})


# Messages whose advice keeps the user's work.

def test_an_interrupted_evaluation_names_its_folder_and_the_command_that_continues_it(trained_run, tmp_path, capfd,
                                                                                      monkeypatch):
    import mnist_vae.evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_vae.evaluate, "evaluate_run", interrupted)
    run = trained_run[0]
    status, err = _main(capfd, "evaluate", run, "--iw-samples", "50")
    assert status == 130
    assert f"the same command again (`vae evaluate {run} --iw-samples 50`) continues from the last finished batch" in err
    assert "DIR" not in err and "train --resume" not in err


def _interrupted_run(out):
    """A run stopped after its first epoch's state was saved (as a kill then would leave it)."""
    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=3), out, verbose=0, callbacks=[Stop()])
    assert (out / "backup" / "state.json").exists()
    return out


def test_resuming_after_a_hand_edit_of_config_json_names_the_field_and_writes_nothing(tmp_path, capfd):
    out = _interrupted_run(tmp_path / "run")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "latent_dim": 16}, indent=2))
    before = _snapshot(tmp_path)
    status, err = _main(capfd, "train", "--resume", "--out", out)
    _assert_one_line(status, err, f"{out / 'config.json'}: latent_dim is 16, but the training state in "
                                  f"{out / 'backup'} was saved with latent_dim 2")
    assert "restore that value in config.json to keep its 1 finished epochs" in err and "--overwrite" not in err
    assert _snapshot(tmp_path) == before
    (out / "config.json").write_text(json.dumps(config, indent=2))  # restored: the run goes on
    assert _main(capfd, "train", "--resume", "--out", out, "--quiet")[0] == 0
    assert_complete_run(out, epochs=3)


def test_a_checksum_of_another_known_dataset_names_it_and_its_flag(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    write_fake_dataset(folder, compress=False)
    digest = hashlib.sha256((folder / "train-images-idx3-ubyte").read_bytes()).hexdigest()
    mnist = data.DATASETS["mnist"]
    other = dataclasses.replace(mnist, name="toy_digits", sha256={**mnist.sha256, "train-images-idx3-ubyte": digest})
    monkeypatch.setitem(data.DATASETS, "toy_digits", other)
    with pytest.raises(UserError) as info:
        data.read_idx(folder / "train-images-idx3-ubyte", sha256=mnist.sha256["train-images-idx3-ubyte"])
    message = str(info.value)
    assert "this is toy_digits's train-images-idx3-ubyte" in message and "pass --dataset toy_digits" in message
    assert "delete it" not in message
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\0")
    with pytest.raises(UserError, match="the file is damaged: delete it and fetch it again"):
        data.read_idx(folder / "t10k-labels-idx1-ubyte", sha256=mnist.sha256["t10k-labels-idx1-ubyte"])


def test_duplicate_keys_in_a_sweep_spec_are_an_error(tmp_path):
    from mnist_vae.sweep import load_spec

    spec = tmp_path / "spec.json"
    spec.write_text('{"grid": {"beta": [1.0]}, "samples": 2, "samples": 3}')
    with pytest.raises(UserError, match="key 'samples' is given twice"):
        load_spec(spec)


# A successful run's stderr holds nothing but what the user should read.

@pytest.mark.slow
def test_a_successful_train_evaluate_and_plot_print_no_warnings(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--out", out, "--limit", "256", "--epochs", "2", "--test-limit", "200",
                     "--validation-size", "200", "--grid-size", "4", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    exportable = all(importlib.util.find_spec(name) for name in ("onnx", "tf2onnx"))
    for argv in (["evaluate", out, "--iw-samples", "3", "--limit", "100"], ["plot", out],
                 *([["export", out]] if exportable else [])):
        result = run_cli(*argv)
        assert result.returncode == 0 and result.stderr == "", (argv, result.stderr)
    # On another backend Keras imports TensorFlow to seed it: its start-up notices stay muted too.
    result = run_cli("train", "--out", tmp_path / "jax", "--limit", "200", "--batch-size", "100", "--epochs", "1",
                     "--test-limit", "100", "--validation-size", "100", "--grid-size", "2", "--quiet",
                     env={"KERAS_BACKEND": "jax"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
