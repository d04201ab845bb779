"""The GPU figures: a preset trained, then its K=5000 bound on the full test set, timed.

    KERAS_BACKEND=torch python benchmarks/gpu.py OUT [--preset seed|literature] [--k 5000] [--images 10000]

Trains the preset (`vae train --preset P`, 30 epochs for `seed`) into OUT/PRESET, then runs
`vae evaluate` on it with K importance samples, and prints one table row: backend, device, wall
time of the whole training call and of `fit`, the test loss, the evaluation's wall time, images x
samples per second and the IW-NLL; the same goes into OUT/gpu-PRESET.json. The GPU machines have
torch and jax but not TensorFlow: there the run has no TensorBoard logs (the package trains
without them) and the backend must be torch or jax.

What it is tested with (``tests/test_benchmarks.py``): through ``gpu_device.sh``, the torch backend
on the CPU with TensorFlow hidden and ``--limit 256 --epochs 1 --k 4 --images 20``; then once more
in the test's process, where only the evaluation runs. A GPU machine has torch and jax, not
TensorFlow or Keras: ``benchmarks/gpu_device.sh`` fetches the wheels it lacks here and runs both presets there
in one call (BENCHMARKS.md, "GPU").
"""

import argparse
import json
import sys
import time
from pathlib import Path


def device_name(backend):
    """The accelerator the backend computes on, in words, or the CPU's name."""
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    if backend == "jax":
        import jax

        devices = jax.devices()
        if devices and devices[0].platform != "cpu":
            return devices[0].device_kind
    from harness import machine  # imports Keras: after main() has read the options

    return machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the run (OUT/PRESET); an unfinished run there resumes")
    parser.add_argument("--preset", default="seed", choices=["seed", "literature"])
    parser.add_argument("--k", type=int, default=5000, help="importance samples per image (default: 5000)")
    parser.add_argument("--images", type=int, default=10_000, help="test images evaluated (default: all 10,000)")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs (a tiny test run)")
    parser.add_argument("--limit", type=int, help="train on the first N images only (a tiny test run)")
    parser.add_argument("--validation-size", type=int, help="images held out for validation (a tiny test run)")
    parser.add_argument("--test-limit", type=int, help="test images scored at the end of training (a tiny test run)")
    parser.add_argument("--precision", default="auto", help="training precision (default: auto)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per evaluation batch (default: 100)")
    parser.add_argument("--chunk-size", type=int, default=100, help="samples decoded at once per image (default: 100)")
    args = parser.parse_args(argv)

    import keras

    from mnist_vae.config import PRESETS, Config
    from mnist_vae.evaluate import evaluate_run
    from mnist_vae.rundir import RunDir
    from mnist_vae.train import train

    backend = keras.backend.backend()
    values = dict(PRESETS[args.preset])
    values["precision"] = values.get("precision", args.precision)
    for name in ("epochs", "limit", "validation_size", "test_limit"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    config = Config(**values)
    run = RunDir(args.out / args.preset)
    train_seconds = None  # trained by an earlier call: only the evaluation is timed
    if not run.metrics.exists():
        start = time.perf_counter()
        train(config, run.root, resume=run.resume_state.exists(), verbose=0)  # an interrupted run continues
        train_seconds = round(time.perf_counter() - start, 1)
    metrics = json.loads(run.metrics.read_text())
    run = run.root
    result = evaluate_run(run, k=args.k, limit=args.images, batch_size=args.batch_size, chunk_size=args.chunk_size)
    row = {
        "backend": backend,
        "device": device_name(backend),
        "preset": args.preset,
        "epochs": config.epochs,
        "precision": metrics["precision"],
        "train_seconds": train_seconds,
        "fit_seconds": metrics["fit_seconds_this_session"],
        "test_loss": metrics["test"]["loss"],
        "iw_samples": args.k,
        "images": result["images"],
        "evaluation_seconds": result["seconds"],
        "samples_per_second": result["samples_per_second"],
        "iw_nll": result["iw_nll"],
    }
    (args.out / f"gpu-{args.preset}.json").write_text(json.dumps(row, indent=2) + "\n")
    print("| " + " | ".join(row) + " |")
    print("| " + " | ".join("---" for _ in row) + " |")
    print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return row


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
