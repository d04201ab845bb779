"""Evaluation speed: the importance-weighted bound in float32 and bf16, and the autoregressive scorer.

    python benchmarks/eval_speed.py RUN_DIR [RUN_DIR ...] [--images N] [--k K] [--repeats R]

For each trained run (`vae train` folders), ``estimators.importance_weighted`` on the first N
held-out test images (binarised as ``vae evaluate`` does) with K samples, in each variant,
interleaved, R repeats: float32 (what ``vae evaluate`` does by default), mixed_bfloat16
(``--precision mixed_bfloat16``), and for an autoregressive decoder also the earlier scoring that
ran the whole decoder on K copies of each image (``repeated images``). Prints images x samples
per second (median and best), the speed against float32, the mean IW-NLL and its shift from
float32: the number that says whether bf16 may be used (the target: under 0.05 nats).
"""

import argparse
import statistics
import sys

from harness import interleaved, machine

import numpy as np
from keras import ops

from mnist_vae import estimators
from mnist_vae.data import held_out_images, load_splits
from mnist_vae.precision import precision_refusal
from mnist_vae.rundir import RunDir, load_inference_model


class RepeatedImages:
    """The scoring before ``models.AutoregressiveScorer``: the decoder on K copies of each image."""

    def __init__(self, vae):
        self.vae = vae

    def __call__(self, latent_inputs, images, k):
        return self.vae.decoder({**latent_inputs, "images": ops.tile(images, (k, 1, 1, 1))}, training=False)


def variants(run):
    """name -> (vae, scorer or None) for one run."""
    full = load_inference_model(run, "float32")
    found = {"float32": (full, None)}
    refusal = precision_refusal("mixed_bfloat16")  # under a oneDNN cap below bf16 (ONEDNN_MAX_CPU_ISA)
    if refusal:
        print(f"no mixed_bfloat16 row: {refusal}", file=sys.stderr)
    else:
        found["mixed_bfloat16"] = (load_inference_model(run, "mixed_bfloat16"), None)
    if full.autoregressive:
        found["float32, repeated images"] = (load_inference_model(run, "float32"), RepeatedImages(full))
    return found


def measure(run_dir, images_n, k, repeats, batch_size, chunk_size):
    run = RunDir(run_dir)
    config = run.load_config()
    test = load_splits(config.dataset, config.validation_size, limit=1).test
    images = held_out_images(test.images, config.binarize)[:images_n]
    found = variants(run)
    for vae, scorer in found.values():  # trace and warm the kernels once, outside the timings
        estimators.importance_weighted(vae, images[:batch_size], min(k, chunk_size), batch_size, chunk_size,
                                     scorer=scorer)
    nll = {}

    def bound(name, vae, scorer):
        def step():
            nll[name], _ = estimators.importance_weighted(vae, images, k, batch_size, chunk_size, scorer=scorer)
        return step

    times = interleaved({name: bound(name, *found[name]) for name in found}, repeats)
    rate = {name: len(images) * k / statistics.median(t) for name, t in times.items()}
    for name in found:
        shift = float(np.mean(nll[name]) - np.mean(nll["float32"]))
        print(f"| {run_dir} | {name} | {rate[name]:,.0f} | {len(images) * k / min(times[name]):,.0f} | "
              f"{rate[name] / rate['float32']:.2f}x | {np.mean(nll[name]):.3f} | {shift:+.3f} |", flush=True)
    return rate, nll


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders written by `vae train`")
    parser.add_argument("--images", type=int, default=500, help="first N test images (default: 500)")
    parser.add_argument("--k", type=int, default=1000, help="importance samples per image (default: 1000)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats per variant (default: 2)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=100)
    args = parser.parse_args(argv)
    print(machine())
    print(f"{args.images} test images, K={args.k}, medians of {args.repeats} interleaved repeats")
    print("| run | variant | images x samples/s (median) | best | vs float32 | IW-NLL | shift from float32 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    return {run_dir: measure(run_dir, args.images, args.k, args.repeats, args.batch_size, args.chunk_size)
            for run_dir in args.runs}


if __name__ == "__main__":
    main()
