"""Data-parallel scaling: one process against several tf.distribute workers on this machine, same global batch.

    python benchmarks/scaling.py [--images 8192] [--epochs 3] [--workers 2] [--repeats 2]

Each repeat trains `vae train` once in one process and once as WORKERS `--distribute
multi_worker_mirrored` processes on loopback (TF_CONFIG from ``distribute.loopback_tf_configs``),
taking turns, same seed and global batch (128). Prints per variant the median wall time of the
whole command, the median training seconds per epoch after the first (history.csv's
epoch_seconds, validation included) and the images per second they give, with the ratio to one
process; and the last epoch's losses of both, which must agree (tests/test_distribute.py checks it).
On a 2-core CPU the workers share the same two cores, so expect no speed-up: this measures the
cost of the collectives, not a gain. float32 throughout (both variants alike).
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import machine

from mnist_vae.distribute import loopback_tf_configs


def train_args(out, images, epochs):
    return [sys.executable, "-m", "mnist_vae", "train", "--out", str(out), "--limit", str(images),
            "--epochs", str(epochs), "--validation-size", "1000", "--test-limit", "1000", "--grid-size", "3",
            "--precision", "float32", "--quiet"]


def run_variant(workers, out, images, epochs):
    """Wall seconds of one training with ``workers`` processes (1: no --distribute), and its history rows."""
    start = time.perf_counter()
    if workers == 1:
        subprocess.run(train_args(out, images, epochs), check=True, capture_output=True)
    else:
        procs = [subprocess.Popen([*train_args(out, images, epochs), "--distribute", "multi_worker_mirrored"],
                                  env={**os.environ, "TF_CONFIG": tf_config},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for tf_config in loopback_tf_configs(workers)]
        for proc in procs:
            _, stderr = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"a worker failed:\n{stderr.decode()[-2000:]}")
    wall = time.perf_counter() - start
    with open(out / "history.csv", newline="") as f:
        return wall, list(csv.DictReader(f))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory(prefix="vae-scaling-") as folder:
        for repeat in range(args.repeats):
            for workers in results:
                out = Path(folder) / f"w{workers}-r{repeat}"
                results[workers].append(run_variant(workers, out, args.images, args.epochs))
    print(machine())
    print(f"{args.images} training images per epoch, global batch 128, {args.epochs} epochs, "
          f"{args.repeats} interleaved repeats")
    print("| processes | wall s (median) | s per epoch after the first (median) | img/s | vs 1 process "
          "| last epoch loss | last val -ELBO |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = None
    for workers, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        per_epoch = statistics.median(float(r["epoch_seconds"]) for _, rows in runs for r in rows[1:])
        rate = args.images / per_epoch
        base = base or rate
        last = runs[-1][1][-1]
        print(f"| {workers} | {wall:.1f} | {per_epoch:.2f} | {rate:,.0f} | {rate / base:.2f}x "
              f"| {float(last['loss']):.2f} | {float(last['val_negative_elbo']):.2f} |")


if __name__ == "__main__":
    main()
