"""Hostile but fair use: user files survive --overwrite, a named data folder is never swapped for
another, a diverged run leaves no NaN checkpoint, every bad input is one line and exit status 2
with nothing already written touched, one process per run folder, no orphaned temporaries."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc

import keras
import numpy as np
import pytest

from conftest import assert_complete_run, run_cli, tiny_config, write_fake_dataset
from mnist_vae import cli, data
from mnist_vae.config import Config
from mnist_vae.data import DataError
from mnist_vae.errors import UserError
from mnist_vae.archive import load_model
from mnist_vae.atomic import temporary_beside
from mnist_vae.lock import locked
from mnist_vae.rundir import RunDir
from mnist_vae.train import train

MNIST = data.DATASETS["mnist"]


def _copy_run(trained_run, tmp_path, name="run"):
    source, _ = trained_run
    out = tmp_path / name
    shutil.copytree(source, out)
    return out


def _snapshot(folder):
    """Every file under ``folder`` with its content and modification time."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _main(capfd, *argv, env=None, monkeypatch=None):
    """``vae ARGV`` in this process: (exit status, stderr)."""
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    status = cli.main([str(a) for a in argv])
    return status, capfd.readouterr().err


def _assert_one_line(status, err, message):
    assert status == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err


# 1. --overwrite removes what a run wrote, by name, and nothing else.

def test_overwrite_deletes_run_files_by_name_and_keeps_everything_else(trained_run, tmp_path, capfd):
    out = _copy_run(trained_run, tmp_path)
    old_events = sorted(p.name for p in (out / "logs").rglob("events.out.tfevents.*"))
    assert old_events
    (out / "backup").mkdir()  # a killed run's resume folder, holding a user's file too
    planted = {
        "models/my_model_v1.keras": b"a model of mine",
        "plots/thesis_figure.png": b"my figure",
        "logs/experiment_notes.txt": b"notes",
        "logs/train/more_notes.txt": b"more notes",
        "backup/keep-me.txt": b"mine",
        "notes.txt": b"mine too",
        "models/.vae.keras.notmine.txt": b"looks like ours, is not",
    }
    for name, content in planted.items():
        (out / name).write_bytes(content)
    train(tiny_config(), out, overwrite=True, verbose=0)
    for name, content in planted.items():
        assert (out / name).read_bytes() == content, name
    assert_complete_run(out, epochs=1, user_files=planted)
    assert not set(old_events) & {p.name for p in (out / "logs").rglob("events.out.tfevents.*")}
    err = capfd.readouterr().err
    kept = [line for line in err.splitlines() if "no run wrote" in line]
    assert len(kept) == 1, err
    for name in planted:
        if name != "notes.txt":  # the run folder itself may be the user's working folder: not listed
            assert name in kept[0], kept[0]


def test_a_folder_holding_only_user_files_is_not_a_run(tmp_path):
    out = tmp_path / "work"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "figure.png").write_bytes(b"mine")
    train(tiny_config(limit=64), out, verbose=0)
    assert (out / "plots" / "figure.png").read_bytes() == b"mine"
    assert_complete_run(out, epochs=1)


# 2. A data folder the user named is used or refused, never silently replaced.

def _broken_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing_one = tmp_path / "missing_one"
    write_fake_dataset(missing_one)
    (missing_one / "t10k-labels-idx1-ubyte.gz").unlink()
    folder_in_place = tmp_path / "folder_in_place"
    write_fake_dataset(folder_in_place)
    (folder_in_place / "train-images-idx3-ubyte.gz").unlink()
    (folder_in_place / "train-images-idx3-ubyte.gz").mkdir()
    loop = tmp_path / "loop"
    write_fake_dataset(loop)
    (loop / "train-labels-idx1-ubyte.gz").unlink()
    (loop / "train-labels-idx1-ubyte.gz").symlink_to(loop / "train-labels-idx1-ubyte.gz")
    return {
        empty: "t10k-images-idx3-ubyte(.gz) is missing",
        missing_one: "t10k-labels-idx1-ubyte(.gz) is missing",
        folder_in_place: "train-images-idx3-ubyte.gz is a folder",
        loop: "train-labels-idx1-ubyte.gz is a broken or looping symlink",
    }


def test_a_named_data_folder_that_lacks_a_file_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    for folder, problem in _broken_folders(tmp_path).items():
        with pytest.raises(DataError, match="does not hold the mnist dataset") as info:
            data.load_splits("mnist", data_dir=folder)
        assert problem in str(info.value) and f"--data-dir {folder}" in str(info.value)
        monkeypatch.setenv(data.ENV_DATA_DIR, str(folder))
        with pytest.raises(DataError, match=f"{data.ENV_DATA_DIR}={folder} does not hold") as info:
            data.load_splits("mnist")
        assert problem in str(info.value)
        monkeypatch.delenv(data.ENV_DATA_DIR)
    # Unset or empty: the shipped copy, as before.
    monkeypatch.setenv(data.ENV_DATA_DIR, "")
    assert len(data.load_splits("mnist", limit=10).train) == 10


# 3. A diverged run never leaves a NaN "best" model.

class _PoisonWeights(keras.callbacks.Callback):
    """Set every weight to NaN when ``epoch`` begins: a divergence at a known moment."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.set_weights([np.full_like(w, np.nan) if np.issubdtype(w.dtype, np.floating) else w
                                    for w in self.model.get_weights()])


@pytest.mark.slow
def test_a_run_that_diverges_in_its_first_epoch_leaves_no_checkpoint(tmp_path):
    out = tmp_path / "run"
    # The case: Adam at 0.99 diverges within the first epoch (NaN loss in batch ~15).
    result = run_cli("train", "--out", out, "--learning-rate", "0.99", "--test-limit", "500", "--limit", "4096", "--epochs", "2",
                     "--validation-size", "500", "--quiet")
    _assert_one_line(result.returncode, result.stderr,
                     "no epoch ended with a finite loss, so there is no good checkpoint")
    assert not (out / "checkpoint.keras").exists()
    assert not list(out.rglob("*.tmp*")), "no temporary file left behind"
    with pytest.raises(UserError, match="no good checkpoint"):
        train(tiny_config(), tmp_path / "poisoned", verbose=0, callbacks=[_PoisonWeights(0)])
    assert not (tmp_path / "poisoned" / "checkpoint.keras").exists()


def test_a_run_that_diverges_later_keeps_the_last_finite_best(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"diverged \(loss nan.*in epoch 2; .*checkpoint.keras keeps the best model "
                                        r"so far \(validation loss \d+\.\d\d\)"):
        train(tiny_config(epochs=3), out, verbose=0, callbacks=[_PoisonWeights(1)])
    weights = load_model(out / "checkpoint.keras").get_weights()
    assert all(np.isfinite(w).all() for w in weights)


# 4. Every bad input: one line, exit status 2, nothing already written touched.

def _hostile_config_files(tmp_path):
    def write(name, content):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    return {
        fifo: "not a regular file",
        tmp_path: "not a regular file",  # a folder
        write("deep.json", "[" * 100_000 + "]" * 100_000): "nested too deeply",
        write("deep_object.json", '{"a":' * 50_000 + "1" + "}" * 50_000): "nested too deeply",
        write("digits.json", '{"seed": ' + "9" * 5000 + "}"): "not a readable JSON config (Exceeds the limit",
        write("seed32.json", json.dumps({"seed": 2**32})): "seed32.json: field seed must be between 0 and 4,294,967,295",
        write("seed64.json", json.dumps({"seed": 2**64})): "seed64.json: field seed must be between 0 and 4,294,967,295",
        write("grid.json", json.dumps({"grid_size": 100_000})): "grid.json: field grid_size must be between 2 and 100",
        write("latent.json", json.dumps({"latent_dim": 10**9})): "latent.json: field latent_dim must be between 1 and 1,024",
        write("nan.json", '{"learning_rate": NaN}'): "nan.json: field learning_rate must be between 0 and 1, got nan",
        write("huge.json", " " * (2 << 20) + "{}"): "larger than 1,048,576 bytes",
        write("latin1.json", b'{"dataset": "caf\xe9"}'): "not UTF-8 text",
        write("keys.json", json.dumps({f"k{i}": i for i in range(10_000)})): "unknown config field(s) 'k0', ",
        write("twice.json", '{"latent_dim": 2, "epochs": 3, "latent_dim": 16}'): "key 'latent_dim' is given twice",
    }


def test_hostile_config_files_are_refused_with_a_named_reason(tmp_path):
    for path, message in _hostile_config_files(tmp_path).items():
        with pytest.raises(UserError) as info:
            Config.load(path)
        assert message in str(info.value) and len(str(info.value)) < 400, (path, str(info.value))


def test_a_fifo_as_config_does_not_hang_the_command(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    result = run_cli("train", "--config", fifo, "--out", tmp_path / "run", timeout=120)
    _assert_one_line(result.returncode, result.stderr, "not a regular file")
    assert not (tmp_path / "run").exists()


def test_bad_command_lines_are_one_line_and_touch_nothing(trained_run, tmp_path, capfd, monkeypatch):
    run = _copy_run(trained_run, tmp_path)
    run_with_bad_config = _copy_run(trained_run, tmp_path, "bad_config")
    saved = json.loads((run_with_bad_config / "config.json").read_text())
    (run_with_bad_config / "config.json").write_text(json.dumps({**saved, "grid_size": 100_000}))
    plots_is_a_file = _copy_run(trained_run, tmp_path, "plots_is_a_file")
    shutil.rmtree(plots_is_a_file / "plots")
    (plots_is_a_file / "plots").write_text("not a folder")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    empty = tmp_path / "empty"
    empty.mkdir()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    new = tmp_path / "new"
    cases = [
        (["evaluate", run, "--limit", "0"], {}, "--limit must be between 1 and"),
        (["evaluate", run, "--seed", "-5"], {}, "--seed must be between 0 and"),
        (["evaluate", run, "--batch-size", "5000", "--chunk-size", "5000"], {}, "at most 10,000 images decoded"),
        (["evaluate", run, "--precision", "float16"], {}, "argument --precision: invalid choice: 'float16'"),
        (["evaluate", run, "--sample-quality", "--precision", "float32"], {}, "--precision is read by the likelihood"),
        (["plot", run, "--grid-size", "100000"], {}, "--grid-size must be between 2 and 100"),
        (["plot", run_with_bad_config], {}, f"{run_with_bad_config / 'config.json'}: field grid_size must be between 2 and 100, got 100000"),
        (["plot", plots_is_a_file], {}, f"cannot write or read {plots_is_a_file / 'plots'} (File exists)"),
        (["train", "--out", a_file], {}, "is a file, not a folder"),
        (["train", "--out", a_file / "run"], {}, "cannot create the run folder"),
        (["train", "--out", new, "--seed", str(2**32)], {}, "--seed must be between 0 and 4,294,967,295"),
        (["train", "--out", new, "--seed", str(2**64)], {}, "--seed must be between 0 and 4,294,967,295"),
        (["train", "--out", new, "--config", deep], {}, "nested too deeply"),
        (["train", "--out", new, "--data-dir", empty], {}, "does not hold the mnist dataset"),
        (["train", "--out", new], {data.ENV_DATA_DIR: str(empty)}, "does not hold the mnist dataset"),
        (["train", "--out", run, "--epochs", "1"], {}, "already holds a run"),
        (["train", "--out", new, "--latent-dim", "x"], {}, "invalid int value: 'x'"),
    ]
    before = _snapshot(tmp_path)
    for argv, env, message in cases:
        with monkeypatch.context() as patch:
            status, err = _main(capfd, *argv, env=env, monkeypatch=patch)
        _assert_one_line(status, err, message)
        assert _snapshot(tmp_path) == before, argv
        assert not new.exists(), argv


# 4b. Folders that cannot be written, and a full disk, are found before the long work starts.

@pytest.mark.parametrize("folder, argv", [
    ("", ["evaluate", "{run}", "--iw-samples", "2"]),  # before evaluating
    ("plots", ["plot", "{run}"]),  # before drawing
    ("models", ["train", "--out", "{run}", "--overwrite", "--limit", "64", "--epochs", "1"]),  # before deleting
])
def test_an_unwritable_folder_is_refused_before_the_work_starts(trained_run, tmp_path, capfd, make_unwritable,
                                                                 folder, argv):
    run = _copy_run(trained_run, tmp_path)
    before = _snapshot(run)
    make_unwritable(run / folder)
    status, err = _main(capfd, *(a.format(run=run) for a in argv))
    _assert_one_line(status, err, f"cannot write in {run / folder}")
    assert _snapshot(run) == before


def test_training_on_a_nearly_full_file_system_stops_before_writing(small_filesystem, capfd):
    out = small_filesystem / "run"
    status, err = _main(capfd, "train", "--out", out, "--limit", "64", "--epochs", "1")
    _assert_one_line(status, err, "MB free on its file system and this needs about")
    assert list(small_filesystem.iterdir()) == [], "nothing written, the run folder made here removed again"


def test_evaluation_asks_for_room_for_its_progress_file_before_the_long_part(trained_run, tmp_path, capfd,
                                                                            monkeypatch):
    # The saved progress of 10,000 images x 10 labels is 1.6 MB, and replacing it atomically holds
    # two copies: room for the JSON and one copy is not enough, and is found before any scoring.
    from mnist_vae import evaluate, rundir

    run = _copy_run(trained_run, tmp_path)
    before = _snapshot(run)
    progress_bytes = evaluate.Progress(tmp_path / "unused.npz", {}, slots=1, n=20).nbytes
    usage = shutil.disk_usage(run)
    monkeypatch.setattr(rundir.shutil, "disk_usage",
                        lambda _: usage._replace(free=evaluate.EVALUATION_BYTES + progress_bytes))
    monkeypatch.setattr(evaluate, "_iw_terms", lambda *a, **k: pytest.fail("scored before the space check"))
    status, err = _main(capfd, "evaluate", run, "--iw-samples", "2", "--limit", "20")
    _assert_one_line(status, err, "MB free on its file system and this needs about")
    assert _snapshot(run) == before


@pytest.mark.parametrize("level", [None, "2"])
def test_importing_the_package_prints_nothing_whatever_the_cpu(level):
    # TF 2.21 prints start-up notices through absl before it reads TF_CPP_MIN_LOG_LEVEL (on CPUs with
    # AVX512_VNNI/BF16, "oneDNN custom operations are on"); children of a process that imported the
    # package inherit the 2 it sets. Either way stderr must stay empty, or one-line errors are buried.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    result = subprocess.run([sys.executable, "-c", "import mnist_vae, keras; keras.ops.ones(1)"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_os_errors_without_a_file_name_name_the_run_folder(tmp_path):
    error = OSError(28, "No space left on device")
    out = tmp_path / "run"
    args = cli.build_parser().parse_args(["train", "--out", str(out)])
    line = cli._describe_os_error(error, args)
    assert f"a file in {out} (No space left on device); free some space" in line
    assert "--resume" not in line, "nothing to resume yet"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "state.json").write_text("{}")
    assert f"then `vae train --resume --out {out}` continues" in cli._describe_os_error(error, args)


# 5. Decompression stops at each file's known size.

def _gzip_bomb(path, megabytes):
    with gzip.open(path, "wb", compresslevel=9) as f:
        zeros = bytes(1 << 20)
        for _ in range(megabytes):
            f.write(zeros)
    return path


def test_a_file_that_inflates_past_its_known_size_is_refused_without_filling_memory(tmp_path):
    bomb = _gzip_bomb(tmp_path / "train-labels-idx1-ubyte.gz", 512)  # 512 MiB from about 0.5 MB
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="holds more than the 60,008 bytes"):
            data.read_idx(bomb, ndim=1, max_bytes=MNIST.sizes["train-labels-idx1-ubyte"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB"
    raw = tmp_path / "raw" / "t10k-labels-idx1-ubyte"
    raw.parent.mkdir()
    raw.write_bytes(bytes(MNIST.sizes["t10k-labels-idx1-ubyte"] + 1))
    with pytest.raises(DataError, match="holds more than the 10,008 bytes"):
        data.read_idx(raw, max_bytes=MNIST.sizes["t10k-labels-idx1-ubyte"])


def test_a_bomb_in_a_data_folder_is_named_by_the_loader(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(data.default_dirs(MNIST)[0], folder)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    _gzip_bomb(folder / "train-labels-idx1-ubyte.gz", 64)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: holds more than the 60,008 bytes"):
        data.load_splits("mnist", data_dir=folder)


def test_every_registered_file_has_a_known_size_matching_the_shipped_copy():
    for spec in data.DATASETS.values():
        assert sorted(spec.sizes) == sorted(spec.file_names()) == sorted(spec.sha256)
    folder = data.default_dirs(MNIST)[0]
    for name in MNIST.file_names():
        with gzip.open(folder / f"{name}.gz") as f:
            assert len(f.read()) == MNIST.sizes[name], name


def test_downloads_use_https_and_stop_at_the_expected_size(tmp_path):
    for spec in data.DATASETS.values():
        assert spec.urls and all(url.startswith("https://") for url in spec.urls), spec.name

    class Endless:
        def read(self, n):
            return bytes(n)

    with pytest.raises(DataError, match="more than 1,000 bytes"):
        with open(tmp_path / "out", "wb") as target:
            data.sources.copy_at_most(Endless(), target, 1000, "https://example.invalid/file.gz")


# 6. One process per run folder; a killed holder's lock is taken over.

_HOLD_LOCK = """
import sys, time
from mnist_vae.lock import locked
from mnist_vae.rundir import RunDir
with locked(RunDir(sys.argv[1]), "vae train --out test"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_process_on_a_run_folder_fails_at_once_and_a_stale_lock_is_taken_over(
        trained_run, tmp_path, capfd):
    run = _copy_run(trained_run, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(run)
        for argv in (["train", "--resume", "--out", run], ["train", "--overwrite", "--out", run, "--limit", "64"],
                     ["evaluate", run, "--iw-samples", "2"], ["plot", run]):
            start = time.perf_counter()
            status, err = _main(capfd, *argv)
            _assert_one_line(status, err, f"{run} is in use by another vae process (pid {holder.pid}, "
                                          "`vae train --out test`)")
            assert time.perf_counter() - start < 30, "fails at once, without waiting"
            assert _snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / ".vae.lock").exists(), "a killed holder leaves its lock file"
    status, err = _main(capfd, "evaluate", run, "--iw-samples", "2", "--limit", "5")
    assert status == 0, err
    assert (run / "evaluation.json").exists() and not (run / ".vae.lock").exists()


def test_a_failed_start_removes_the_folder_it_made_and_its_lock(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path / "nowhere"))
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(DataError):
        train(tiny_config(), out, verbose=0)
    assert not (tmp_path / "a").exists()


# 7. Temporary files of a killed process are removed on the next start; look-alikes stay.

def test_orphaned_temporaries_are_removed_when_the_run_is_next_locked(trained_run, tmp_path):
    out = _copy_run(trained_run, tmp_path)
    run = RunDir(out)
    (out / "backup").mkdir()
    orphans = [temporary_beside(path, suffix) for path, suffix in [
        (run.encoder, ".keras"), (run.plots / "manifold.png", ".png"), (run.checkpoint, ".keras"),
        (run.config, ".json"), (run.history, ".csv"), (run.evaluation, ".json"),
        (run.backup / "state.json", ".json"), (run.backup / "epoch-00003-0123abcd.weights.h5", ".weights.h5"),
    ]]
    look_alikes = [out / "models" / ".my.keras.abcdefgh.tmp.keras", out / ".notes.txt.abcdefgh.tmp.txt",
                   out / "plots" / "manifold.png.abcdefgh.tmp.png", out / "models" / ".vae.keras.backup"]
    for path in look_alikes:
        path.write_text("mine")
    assert sorted(map(str, run.temporaries())) == sorted(orphans)
    with locked(run, "test"):
        pass
    assert not any(os.path.exists(p) for p in orphans)
    assert all(p.read_text() == "mine" for p in look_alikes)


def test_every_file_a_run_writes_is_known_by_name(trained_run):
    out, _ = trained_run
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert any(p.name.startswith("events.out.tfevents") for p in written) and (out / "plots").is_dir()
    assert sorted(RunDir(out).output_files()) == written, "--overwrite must recognise each of them"
