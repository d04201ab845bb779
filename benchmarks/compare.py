"""Training throughput against what users would copy instead, in one run: the seed architecture, batch 128.

    python benchmarks/compare.py [--images 16384] [--repeats 5]

Rows, each timed over one epoch of the same images, taking turns epoch by epoch after a warm-up
epoch (so that whatever slows the machine for a while, another process or the VM, falls on every row;
the ~1.5x slow epochs the pipeline once had were tf.data's autotuner, see ``data.keras_input``):

- this package's ``fit`` with ``--precision auto`` (the default) and with float32;
- a keras-io-style reference: a subclassed ``keras.Model`` with a ``tf.GradientTape`` train step,
  a sigmoid decoder output and binary cross-entropy on probabilities (the keras-io VAE example's
  recipe, on this package's layers and 32x32 padded input, loss on the 28x28 pixels), fed NumPy
  arrays as the example feeds them; and the same reference fed this package's input pipeline
  (``data.keras_input``: tf.data without its autotuner, whose thread can hold the end of an epoch
  for seconds), which isolates the train step;
- a plain PyTorch eager reference (the same layers in ``torch.nn``, channels first), and
  ``torch.compile`` of it where that works; both skipped when torch is not installed.

Each row also as achieved FLOP/s: the model's training FLOPs per image (3x the forward
multiply-adds of its convolutions and dense layers, 2 FLOPs each) times images/s, against this
machine's float32 and bf16 matmul peak measured here with TensorFlow (2048x2048 products).
TensorFlow backend. Prints a Markdown table; medians and bests, ratios against the keras-io row (of
the medians, and the median of each round's own ratio, which pairs epochs that ran close together in
time), the median round ratio against the reference fed without the autotuner (its train step
alone), then every round's images/s.
"""

import argparse
import math
import os
import statistics
import sys

from harness import (BATCH, interleaved, keras_io_reference, machine, matmul_peak, round_ratios, torch_reference,
                     train_flops_per_image)

import keras
import numpy as np

from mnist_vae import data, models
from mnist_vae.config import Config
from mnist_vae.precision import precision_refusal, resolve_precision
from mnist_vae.train import largest_divisor

# The row of the reference fed as this package feeds itself: its train step alone (see rows()).
STEP_ALONE = "keras-io-style reference, input without tf.data's autotuner"


class TorchRunner:
    """One epoch of eager (or compiled) PyTorch training over shuffled NCHW batches."""

    def __init__(self, images, compiled=False):
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count())
        self.torch = torch
        self.x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.model = torch_reference()
        self.loss = torch.compile(self.model) if compiled else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.rng = np.random.default_rng(0)
        self.epoch()  # warm-up (and compilation)

    def epoch(self):
        order = self.torch.from_numpy(self.rng.permutation(len(self.x)))
        for start in range(0, len(self.x), BATCH):
            loss = self.loss(self.x[order[start:start + BATCH]])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


class KerasRunner:
    """One ``fit`` epoch of a compiled Keras model (warmed up once)."""

    def __init__(self, model, fit_kwargs, steps_per_execution):
        self.model, self.fit_kwargs = model, fit_kwargs
        model.compile(keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=steps_per_execution)
        self.epoch()

    def epoch(self):
        self.model.fit(epochs=1, verbose=0, **self.fit_kwargs)


def rows(x, include_torch=True):
    """(name, precision, runner factory, layout) for every row this machine can run."""
    shape = x.shape[1:]
    spe = largest_divisor(math.ceil(len(x) / BATCH), Config().steps_per_execution)
    # What `vae train` hands fit (data.keras_input): on TensorFlow a tf.data pipeline without the autotuner.
    ours = dict(x=data.keras_input(data.ImageBatches(x, BATCH, shuffle=True)), shuffle=False)
    auto = resolve_precision("auto")
    out = [
        ("keras-io-style reference (GradientTape, BCE on probabilities)", "float32",
         lambda: KerasRunner(keras_io_reference(shape), dict(x=x, batch_size=BATCH, shuffle=True), 1), "keras_io"),
        # The same reference fed as this package feeds itself: its compute alone, without the
        # autotuner's stalls at the end of an epoch (see data.keras_input), so a reader can tell
        # how much of the ratio is the input pipeline and how much the train step.
        (STEP_ALONE, "float32", lambda: KerasRunner(keras_io_reference(shape), ours, 1), "keras_io"),
        (f"mnist-vae fit, keras_io layout, default precision (auto = {auto})", auto,
         lambda: KerasRunner(models.build_vae(image_shape=shape, seed=0, precision=auto), ours, spe), "keras_io"),
        ("mnist-vae fit, float32", "float32",
         lambda: KerasRunner(models.build_vae(image_shape=shape, seed=0), ours, spe), "keras_io"),
        # The default layout (no 16-unit bottleneck): not layer for layer, so beside the others.
        (f"mnist-vae fit, default layout conv (auto = {auto})", auto,
         lambda: KerasRunner(models.build_vae(image_shape=shape, architecture="conv", seed=0, precision=auto), ours, spe),
         "conv"),
    ]
    if include_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed: no PyTorch rows", file=sys.stderr)
        else:
            out.append(("PyTorch eager reference, float32", "float32", lambda: TorchRunner(x), "keras_io"))
            out.append(("PyTorch torch.compile reference, float32", "float32", lambda: TorchRunner(x, compiled=True),
                        "keras_io"))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16384, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per row, after one warm-up")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch rows")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x = data.load_splits("mnist", limit=args.images).train.images
    ready, precision, layout = {}, {}, {}
    for name, dtype, make, arch in rows(x, include_torch=not args.no_torch):
        try:
            ready[name], precision[name], layout[name] = make(), dtype, arch
        except Exception as error:  # torch.compile needs a C++ toolchain, for one; say so and go on
            print(f"{name}: skipped ({type(error).__name__}: {str(error).splitlines()[0][:200]})", file=sys.stderr)
    seconds = interleaved({name: runner.epoch for name, runner in ready.items()}, args.repeats)
    rates = {name: [len(x) / s for s in values] for name, values in seconds.items()}

    flops = {arch: train_flops_per_image(models.ARCHITECTURES[arch].build_encoder(x.shape[1:]),
                                         models.ARCHITECTURES[arch].build_decoder(x.shape[1:]))
             for arch in set(layout.values())}
    # Under a oneDNN cap below bf16 (ONEDNN_MAX_CPU_ISA) a bf16 product would crash; no bf16 row runs then.
    refusal = precision_refusal("mixed_bfloat16")
    if refusal:
        print(f"no bf16 matmul peak: {refusal}", file=sys.stderr)
    peaks = {"float32": matmul_peak("float32"), "mixed_bfloat16": float("nan") if refusal else matmul_peak("bfloat16")}
    base = next(iter(rates.values()))
    # The reference's train step alone (its input without the autotuner), where that row ran.
    compute = rates.get(STEP_ALONE, base)
    bf16_peak = "not measured" if refusal else f"{peaks['mixed_bfloat16']:.0f}"
    print(machine())
    print(f"{len(x)} images per epoch, batch {BATCH}, {args.repeats} interleaved epochs per row; "
          f"{flops['keras_io'] / 1e6:.1f} MFLOP per training image of the keras_io layout; matmul peak here {peaks['float32']:.0f} GFLOP/s float32, "
          f"{bf16_peak} bf16\n")
    print("| row | best img/s | median img/s | median vs keras-io | median of round ratios "
          "| median of round ratios vs the reference's step alone | median GFLOP/s "
          "| % of its precision's matmul peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, values in rates.items():
        median = statistics.median(values)
        gflops = median * flops[layout[name]] / 1e9
        print(f"| {name} | {max(values):,.0f} | {median:,.0f} | {median / statistics.median(base):.2f}x | "
              f"{statistics.median(round_ratios(values, base)):.2f}x | "
              f"{statistics.median(round_ratios(values, compute)):.2f}x | "
              f"{gflops:.0f} | {100 * gflops / peaks[precision[name]]:.0f}% ({precision[name]}) |")
    # Every epoch, so a reader can see slow spells: the rows of one round ran back to back.
    print("\n| round | " + " | ".join(f"row {i + 1}" for i in range(len(rates))) + " |")
    print("| ---: |" + " ---: |" * len(rates))
    for i, round_rates in enumerate(zip(*rates.values())):
        print(f"| {i + 1} | " + " | ".join(f"{rate:,.0f}" for rate in round_rates) + " |")
    return rates, flops


if __name__ == "__main__":
    main()
