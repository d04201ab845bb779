"""The benchmark scripts run (tiny settings) and count what they say they count."""

import importlib
import json

import pytest

from conftest import REPO

harness = importlib.import_module("harness")


def _load(name):
    """A benchmark script as a module (``benchmarks/`` is on the tests' import path)."""
    return importlib.import_module(name)


def test_the_harness_takes_turns_and_names_the_machine():
    import os

    calls = []
    seconds = harness.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3 and all(len(v) == 3 and min(v) >= 0 for v in seconds.values())
    line = harness.machine()
    assert f"{os.cpu_count()} cores" in line and "backend tensorflow" in line
    if os.path.exists("/proc/cpuinfo"):
        assert "family" in line and "model" in line


@pytest.mark.slow
def test_compare_counts_the_seed_models_flops_and_prints_every_row(capsys):
    compare = _load("compare")
    from mnist_vae import models

    # Multiply-adds by hand, 32x32 input: conv 16*16*32*9*1 + conv 8*8*64*9*32 + dense 4096*16 + 2*(16*2)
    # + dense 2*4096 + deconv 8*8*64*9*64 + deconv 16*16*64*9*32 + deconv 32*32*32*9*1.
    macs = 73_728 + 1_179_648 + 65_536 + 64 + 8_192 + 2_359_296 + 4_718_592 + 294_912
    assert harness.train_flops_per_image(models.build_keras_io_encoder(), models.build_conv_decoder()) == 6 * macs
    rates, _ = compare.main(["--images", "256", "--repeats", "1", "--no-torch"])
    table = capsys.readouterr().out
    assert len(rates) == 5 and all(len(v) == 1 and v[0] > 0 for v in rates.values())
    for name in rates:
        assert f"| {name} |" in table
    assert "| 1 | " in table  # the per-round table
    # A round's ratio pairs the row's epoch with the reference's epoch of the same round.
    assert harness.round_ratios([200.0, 300.0], [100.0, 300.0]) == [2.0, 1.0]


def test_layer_profile_times_every_computing_layer_and_its_phase_decomposition_is_the_layer(capsys):
    import keras
    import numpy as np

    from mnist_vae import models

    layer_profile = _load("layer_profile")
    # The four phase convolutions compute the transposed convolution itself (float32, odd sizes too).
    layer = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same", activation="relu")
    x = np.random.default_rng(0).standard_normal((3, 7, 9, 4)).astype("float32")
    layer.build(x.shape)
    layer.bias.assign(np.linspace(-1, 1, 5))
    expected = keras.ops.convert_to_numpy(layer(x))
    got = keras.ops.convert_to_numpy(layer_profile.phase_transposed_conv(layer, keras.ops.convert_to_tensor(x)))
    assert expected.shape == (3, 14, 18, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    median, labels, ops = layer_profile.main(["--batch", "4", "--repeats", "1", "--calls", "1", "--ops", "1"])
    table = capsys.readouterr().out
    # keras_io: 2 convolutions, 3 dense in the encoder; 1 dense, 3 transposed convolutions in the decoder,
    # two of them stride 2 with a phase row each.
    assert len(labels) == 11 and sum(label.startswith("...") for label in labels.values()) == 2
    assert all(value > 0 for value in median.values())
    for label in [*labels.values(), "sum of the layers", "whole train step"]:
        assert f"| {label} |" in table
    assert "train step with the decoder's last convolution in float32" in table
    # --ops: the traced step by op type in each precision, the filter and bias gradients among them.
    assert set(ops) == set(models.PRECISIONS)
    for per_type in ops.values():
        assert any("Conv2DBackpropFilter" in op for op in per_type) and per_type["BiasAddGrad"] > 0
        assert all(ms >= 0 for ms in per_type.values()) and "Process" not in per_type  # ops only
    ops_table = table.split("whole train step by op type")[1]
    assert "| all ops |" in ops_table and sum("Conv2D" in line for line in ops_table.splitlines()) >= 3
    # That variant really computes the last convolution in float32; the default step in bf16.
    for float32_output, dtype in [(True, "float32"), (False, "bfloat16")]:
        _, _, vae = layer_profile.model_step("keras_io", "mixed_bfloat16", 4, seed=0, float32_output=float32_output)
        assert vae.decoder.get_layer(models.OUTPUT_LAYER).compute_dtype == dtype


@pytest.mark.slow
def test_eval_speed_times_every_variant_and_the_scorer_matches_repeated_images(trained_run, tmp_path, capsys):
    import numpy as np

    from conftest import tiny_config
    from mnist_vae.train import train

    eval_speed = _load("eval_speed")
    ar_run = tmp_path / "ar"
    train(tiny_config(epochs=1, architecture="resnet_ar", binarize="dynamic", latent_dim=4), ar_run, verbose=0)
    seed_run, _ = trained_run
    found = eval_speed.main([str(seed_run), str(ar_run), "--images", "20", "--k", "4", "--repeats", "1",
                             "--batch-size", "10", "--chunk-size", "4"])
    table = capsys.readouterr().out
    (seed_rate, _), (ar_rate, ar_nll) = found[str(seed_run)], found[str(ar_run)]
    assert sorted(seed_rate) == ["float32", "mixed_bfloat16"]
    assert sorted(ar_rate) == ["float32", "float32, repeated images", "mixed_bfloat16"]
    assert all(rate > 0 for rate in [*seed_rate.values(), *ar_rate.values()])
    assert table.count(f"| {ar_run} |") == 3
    # The scorer computes the same bound as the decoder on K copies of each image.
    np.testing.assert_allclose(ar_nll["float32"], ar_nll["float32, repeated images"], rtol=1e-5)


@pytest.mark.slow
def test_the_gpu_machines_script_runs_both_presets_without_tensorflow(tmp_path):
    """`gpu_device.sh run` (and so `gpu.py`) as a lent GPU machine runs it: torch, no TensorFlow; tiny settings."""
    import os
    import subprocess

    pytest.importorskip("torch")
    # The GPU machines have no TensorFlow (nor the web server's packages): a package of each name
    # that fails to import stands in for its absence, ahead of this machine's site-packages.
    hidden = tmp_path / "hidden"
    for name in ("tensorflow", "fastapi", "uvicorn"):
        (hidden / name).mkdir(parents=True)
        (hidden / name / "__init__.py").write_text(f"raise ImportError('{name} is hidden by the test')\n")
    (tmp_path / "no-wheels").mkdir()
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(hidden), "GPU_WHEELS": str(tmp_path / "no-wheels")}
    env.pop("KERAS_BACKEND", None)  # the script's default: torch
    tiny = ["--limit", "256", "--epochs", "1", "--k", "4", "--images", "20", "--batch-size", "10", "--chunk-size", "4",
            "--validation-size", "200", "--test-limit", "100"]
    command = ["bash", str(REPO / "benchmarks" / "gpu_device.sh"), "run", str(tmp_path / "work"), str(results), *tiny]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for preset in ("seed", "literature"):
        row = json.loads((results / f"gpu-{preset}.json").read_text())
        assert (row["backend"], row["preset"], row["iw_samples"], row["images"]) == ("torch", preset, 4, 20)
        assert row["train_seconds"] > 0 and row["samples_per_second"] > 0
        log = (results / f"gpu-{preset}.log").read_text()
        assert "no TensorBoard logs are written" in log  # it did not find TensorFlow
    assert "backend torch" in (results / "versions.txt").read_text()
    # Only the rows, logs and versions are in RESULTS (what comes back from the device); runs stay in WORK.
    assert sorted(p.name for p in results.iterdir()) == sorted(
        ["versions.txt", "gpu-seed.json", "gpu-seed.log", "gpu-literature.json", "gpu-literature.log"])
    assert (tmp_path / "work" / "literature" / "models" / "vae.keras").exists()
    assert json.loads((tmp_path / "work" / "literature" / "config.json").read_text())["architecture"] == "resnet_ar"
    # Run again: gpu.py only evaluates the finished runs (a second device call after a cut-off one).
    # In this process, so on this backend: a model saved under torch reloads for inference here.
    gpu = _load("gpu")
    for preset in ("seed", "literature"):
        row = gpu.main([str(tmp_path / "work"), "--preset", preset, *tiny])
        assert row["train_seconds"] is None and row["samples_per_second"] > 0 and row["images"] == 20


@pytest.mark.slow
def test_time_to_quality_scores_both_recipes_every_epoch_and_reuses_the_reference(tmp_path, capsys):
    ttq = _load("time_to_quality")
    args = [str(tmp_path), "--limit", "256", "--test-images", "200", "--reference-epochs", "2",
            "--recipe", "--architecture keras_io --epochs 2 --batch-size 64 --validation-size 200 --test-limit 200"]
    ref, rows = ttq.main(args)
    assert len(ref["curve"]) == 2 and ref["train_images"] == 256
    (row,) = rows
    assert len(row["curve"]) == 2 and row["final_test_loss"] > 0
    seconds = [s for s, _ in row["curve"]]
    assert 0 < seconds[0] < seconds[1] <= row["wall_seconds"]
    target = ref["curve"][-1][1]
    assert row["reached_reference_at"] == ttq.first_reaching(row["curve"], target)
    assert ttq.first_reaching([(1.0, 200.0), (2.0, 150.0), (3.0, 140.0)], 151.0) == 2.0
    assert ttq.first_reaching([(1.0, 200.0)], 151.0) is None
    (dead,) = row["dead_relu_units"].values()
    assert dead[1] == 16 and 0 <= dead[0] <= 16
    assert "| default | 0 |" in capsys.readouterr().out
    # A second call reuses the saved reference and appends its rows.
    reference_file = tmp_path / "reference.json"
    before = reference_file.stat().st_mtime_ns
    ttq.main([*args[:-2], "--recipe", "--epochs 1 --batch-size 64 --validation-size 200 --test-limit 200", "--name", "one-epoch"])
    assert reference_file.stat().st_mtime_ns == before
    assert [r["recipe"] for r in json.loads((tmp_path / "time_to_quality.json").read_text())] == ["default", "one-epoch"]
    # The reference fed this package's input is its own file; the rows say which reference they beat.
    ref, (row,) = ttq.main([str(tmp_path), "--limit", "256", "--test-images", "200", "--reference-epochs", "1",
                            "--reference-input", "keras_input", "--recipe", "--epochs 1 --batch-size 64 --validation-size 200 --test-limit 200",
                            "--name", "against-keras-input"])
    assert ref["input"] == row["reference_input"] == "keras_input" and len(ref["curve"]) == 1
    keras_input_file = tmp_path / "reference-keras_input.json"
    assert keras_input_file.exists() and reference_file.stat().st_mtime_ns == before
    # Both references at once: one training of the recipe, compared with each saved reference.
    saved = {feed: json.loads(f.read_text()) for feed, f in (("numpy", reference_file), ("keras_input", keras_input_file))}
    before_keras_input = keras_input_file.stat().st_mtime_ns
    capsys.readouterr()
    ref, (row,) = ttq.main([str(tmp_path), "--limit", "256", "--test-images", "200", "--reference-input", "keras_input",
                            "numpy", "--recipe", "--epochs 1 --batch-size 64 --validation-size 200 --test-limit 200", "--name", "both"])
    assert ref == saved["keras_input"] and row["reference_input"] == "keras_input"
    assert keras_input_file.stat().st_mtime_ns == before_keras_input and reference_file.stat().st_mtime_ns == before
    assert list(row["against"]) == ["keras_input", "numpy"]
    for feed, result in row["against"].items():
        seconds, target = saved[feed]["curve"][-1]
        assert result["target"] == target and result["reference_seconds"] == seconds
        assert result["reached_at"] == ttq.first_reaching(row["curve"], target)
        assert result["speed_up"] == (seconds / result["reached_at"] if result["reached_at"] else None)
    assert (row["reached_reference_at"], row["speed_up"]) == (row["against"]["keras_input"]["reached_at"],
                                                              row["against"]["keras_input"]["speed_up"])
    printed = capsys.readouterr().out
    assert "reaches the keras_input reference's value at" in printed and "reaches the numpy reference's value at" in printed
    assert printed.count("| both | 0 |") == 1


def test_overheads_accounts_for_the_whole_run(tmp_path, capsys):
    """benchmarks/overheads.py: every phase timed from its own callback, and the projection adds up."""
    overheads = _load("overheads")
    summary = overheads.main([str(tmp_path), "--epochs", "2", "--project", "5", "--",
                              "--limit", "256", "--validation-size", "500", "--test-limit", "100",
                              "--batch-size", "64", "--grid-size", "4"])
    phases = summary["phases"]
    for name in ("training steps", "validation pass", "epoch end: callbacks (checkpoint, logs, pictures, resume state)",
                 "after fit: save, score the splits, plots"):
        assert phases[name] > 0, name
    assert len(summary["epochs"]) == 2
    # Epoch phases: the first epoch once, the later one's four times more; the rest as measured.
    later = summary["epochs"][1]["training steps"]
    assert phases["training steps"] == pytest.approx(summary["epochs"][0]["training steps"] + 4 * later)
    assert summary["projected_seconds"] == pytest.approx(sum(phases.values()))
    start_up = phases["start-up (imports, data, build, compile)"]
    assert summary["overhead_seconds"] == pytest.approx(sum(phases.values()) - phases["training steps"] - start_up)
    assert "| **per-epoch and after-fit overheads** |" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_layouts_trains_registered_and_script_only_layouts_and_unregisters_them(tmp_path):
    from mnist_vae import models

    layouts = _load("layouts")
    results = layouts.main([str(tmp_path), "conv:--learning-rate 0.002 --batch-size 64", "slim_decoder",
                            "--epochs", "2", "--limit", "256", "--test-limit", "100"])
    assert list(results) == ["conv:--learning-rate 0.002 --batch-size 64", "slim_decoder"]
    conv = results["conv:--learning-rate 0.002 --batch-size 64"]
    assert "--learning-rate 0.002" in conv["flags"] and len(conv["curve"]) == 2
    assert all(seconds > 0 and loss > 0 for seconds, loss in conv["curve"])
    assert results["slim_decoder"]["params"] < conv["params"]
    assert "slim_decoder" not in models.ARCHITECTURES, "the script's variants stay in its call"
    assert (tmp_path / "layouts.json").exists()


def test_serve_load_sends_every_request_and_counts_no_errors(trained_run, capsys):
    pytest.importorskip("httpx")
    rows = _load("serve_load").main([str(trained_run[0]), "--clients", "1", "3", "--requests", "20"])
    assert [(r["clients"], r["requests"], r["errors"]) for r in rows] == [(1, 20, 0), (3, 60, 0)]
    assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["max_ms"] for r in rows)
    assert "| 3 | 60 | 0 |" in capsys.readouterr().out


def test_explorer_latency_times_pointer_moves_in_chromium(tmp_path, trained_run, capsys):
    import os
    import shutil

    pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.skip("no Chromium: apt-get install chromium")
    ort_dir = os.environ.get("MNIST_VAE_ORT_DIR")  # onnxruntime-web's dist folder, for the browser path
    if ort_dir:
        run = tmp_path / "run"
        shutil.copytree(trained_run[0], run)  # the browser path exports into the run
    else:
        run = trained_run[0]
    paths = ["server", "browser"] if ort_dir else ["server"]
    rows = _load("explorer_latency").main([str(run), "--moves", "8", "--paths", *paths,
                                           *(["--ort-dir", ort_dir] if ort_dir else [])])
    assert [r["moves"] for r in rows] == [8] * len(paths)
    assert all(0 < r["median_ms"] <= r["max_ms"] for r in rows)
    assert "| server: vae serve, /api/decode |" in capsys.readouterr().out


@pytest.mark.slow
def test_epoch_stalls_times_every_epoch_of_every_row(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports compare.py, as when run as a script
    seconds = _load("epoch_stalls").main(["--images", "256", "--epochs", "2", "--rounds", "1"])
    table = capsys.readouterr().out
    assert len(seconds) == 4
    for name, fits in seconds.items():
        assert len(fits) == 1 and len(fits[0]) == 2 and all(s > 0 for s in fits[0])
        assert f"| {name} |" in table


def test_this_cpu_runs_every_step_once_and_retrains_a_cut_off_seed_in_a_fresh_folder(tmp_path):
    """benchmarks/this_cpu.sh's bookkeeping, with a stand-in ``python`` that records its calls (no training)."""
    import os
    import subprocess

    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    # The stand-in makes the folders the real scripts would: a seed's run folder, overheads' OUT_DIR.
    fake.write_text(f"""#!/usr/bin/env bash
echo "$(basename "$1") ${{*:2}}" >> {calls}
case "$1" in
  *time_to_quality.py) mkdir -p "$2/$6-seed$4" ;;
  *overheads.py) mkdir -p "$2" ;;
  *) [ -n "${{FAIL_ON:-}}" ] && [[ "$1" == *"$FAIL_ON"* ]] && exit 1 ;;
esac
exit 0
""")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = tmp_path / "out"

    def run(**extra):
        result = subprocess.run(["bash", str(REPO / "benchmarks" / "this_cpu.sh"), str(out), "3 5"],
                                env={**env, **extra}, capture_output=True, text=True)
        lines = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return result, lines

    result, lines = run(FAIL_ON="epoch_stalls")  # cut off after the trainings
    assert result.returncode != 0
    assert [line.split()[0] for line in lines] == ["compare.py", "time_to_quality.py", "time_to_quality.py", "epoch_stalls.py"]
    assert "--seeds 3 --name default-try1 --reference-input numpy keras_input" in lines[1]
    assert "--seeds 5 --name default-try1" in lines[2]
    assert "flags:" in (out / "cpu.txt").read_text() and "family/model:" in (out / "cpu.txt").read_text()
    # Seed 5's training is cut off too: its folder stays, and the next call trains it in a fresh one.
    (out / "time_to_quality-seed5.done").unlink()
    result, lines = run()
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in lines] == ["time_to_quality.py", "epoch_stalls.py", "eval_speed.py", "overheads.py"]
    assert "--seeds 5 --name default-try2" in lines[0] and (out / "ttq" / "default-try1-seed5").is_dir()
    assert lines[2].split()[1] == str(out / "ttq" / "default-try1-seed3")  # the first seed's model
    assert lines[3].split()[1] == str(out / "overheads-try1")
    # Everything done: a third call runs nothing.
    result, lines = run()
    assert result.returncode == 0 and lines == [] and "all done" in result.stdout
    assert "oneDNN ISA cap: none" in (out / "cpu.txt").read_text()
    # Another CPU, or a oneDNN cap (a proxy for one), must not add its rows to these.
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    result, lines = run(ONEDNN_MAX_CPU_ISA="AVX2")
    assert result.returncode == 2 and lines == []
    assert result.stderr.strip() == (f"this_cpu.sh: {out} holds the rows of another CPU or oneDNN cap "
                                     f"({out}/cpu.txt); give a new OUT")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    capped = tmp_path / "capped"
    subprocess.run(["bash", str(REPO / "benchmarks" / "this_cpu.sh"), str(capped), "3"],
                   env={**env, "ONEDNN_MAX_CPU_ISA": "AVX2"}, capture_output=True, text=True, check=True)
    assert "oneDNN ISA cap: AVX2" in (capped / "cpu.txt").read_text()
