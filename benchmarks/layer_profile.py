"""Where a training step's time goes, layer by layer, in float32 and mixed_bfloat16.

    python benchmarks/layer_profile.py [--architecture keras_io] [--batch 128] [--repeats 7] [--calls 20] [--ops 20]

For each computing layer of the model (convolutions, transposed convolutions, dense layers), one
forward and backward pass on a batch of random inputs of that layer's shape: the layer's output,
dotted with a fixed random cotangent, differentiated with respect to its input and its weights
(what the layer costs inside ``fit``). Then the whole ``fit`` train step (``VAE.train_step`` with
Adam) on one batch, so the table shows what the layers leave to everything else (casts, the loss,
the sampling, the optimizer). The first layer is differentiated with respect to its weights only,
as in training (the images need no gradient). Each stride-2 3x3 transposed convolution has a second
row: the same function computed as four phase convolutions (``phase_transposed_conv``, checked
against the layer first), an alternative to oneDNN's transposed-convolution kernels. Every variant
is timed in turns, median of ``--repeats`` rounds of ``--calls`` calls each, because this VM's speed
drifts between phases.

TensorFlow backend only: this is about oneDNN's kernels. Prints a Markdown table: milliseconds per
batch in each precision, bf16's speed-up, and achieved GFLOP/s (training FLOPs = 3x the forward
multiply-adds, 2 FLOPs each).

``--ops N`` adds a second table: N whole train steps per precision traced by TensorFlow's profiler,
the kernels' time per step summed by op type (``_MklNativeConv2DBackpropFilter``, ``BiasAddGrad``,
``Relu``...), what the layer table cannot show: the bias additions, activations and their
gradients that run between the convolutions. TensorFlow runs independent ops side by side on
its inter-op threads, each op on both cores, so these sums exceed the step's wall time; compare
rows and precisions, not the sum with the step.
"""

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

from harness import forward_macs, interleaved, machine

import keras
import numpy as np
import tensorflow as tf

from mnist_vae import models

def layer_step(layer, batch, seed, call=None, input_gradient=True):
    """A compiled forward+backward pass of ``layer`` on a fixed random batch, and the arguments to call it with.

    ``call(layer, x)`` replaces ``layer(x)`` (another way to compute the same function);
    ``input_gradient=False`` for a model's first layer, whose input (the images) needs none.
    """
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch, *layer.input.shape[1:])).astype("float32"))
    if layer.compute_dtype != "float32":
        x = tf.cast(x, layer.compute_dtype)  # as the previous bf16 layer would hand it over
    cotangent = tf.constant(rng.standard_normal((batch, *layer.output.shape[1:])).astype("float32"))
    call = call or (lambda layer, x: layer(x))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(call(layer, x), "float32")
            objective = tf.reduce_sum(y * cotangent)
        return tape.gradient(objective, [x, *layer.trainable_weights] if input_gradient else layer.trainable_weights)

    return step, x


def phase_transposed_conv(layer, x):
    """A stride-2, 3x3, "same" ``Conv2DTranspose`` as four stride-1 convolutions, one per output phase.

    Output pixel (2m + a, 2n + b) only sees input rows m (and m - 1 when a = 0) and columns n (and
    n - 1 when b = 0): kernel taps (2, 0) for the even phase, 1 for the odd one, in each axis. So the
    four phases are 2x2, 2x1, 1x2 and 1x1 convolutions (the 9 taps once each, no multiply by an
    inserted zero), interleaved by ``depth_to_space``. Same function, other kernels.
    """
    kernel = tf.transpose(tf.cast(layer.kernel, x.dtype), (0, 1, 3, 2))  # Keras (kh, kw, out, in) -> conv (kh, kw, in, out)
    shifted = tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]])  # shifted[m + 1] = x[m], shifted[0] = 0 (x[-1])
    even, odd = [2, 0], [1]

    def phase(rows, columns):
        taps = tf.gather(tf.gather(kernel, rows, axis=0), columns, axis=1)
        source = shifted[:, 2 - len(rows):, 2 - len(columns):]
        return tf.nn.conv2d(source, taps, strides=1, padding="VALID")

    y = tf.nn.depth_to_space(tf.concat([phase(even, even), phase(even, odd), phase(odd, even), phase(odd, odd)], -1), 2)
    y = y + tf.cast(layer.bias, x.dtype)
    return layer.activation(y)


def model_step(architecture, precision, batch, seed, float32_output=False):
    """One compiled ``VAE.train_step`` (with Adam) on a fixed random binary batch.

    ``float32_output``: the decoder's last convolution (``models.OUTPUT_LAYER``) computes in
    float32 on a float32 copy of its input, as it once did, instead of in bf16 with
    its output cast up (the Bernoulli default, ``models.float32_layers``): what that costs.
    """
    vae = models.build_vae(architecture=architecture, seed=seed, precision=precision)
    if float32_output:
        vae.decoder.get_layer(models.OUTPUT_LAYER).dtype_policy = "float32"
    vae.compile(keras.optimizers.Adam(1e-3), jit_compile=False)
    images = (np.random.default_rng(seed).random((batch, 32, 32, 1)) < 0.2).astype("float32")
    vae.optimizer.build(vae.trainable_variables)  # the model is built; the step then creates no variable
    step = tf.function(vae.train_step)
    return step, {"images": tf.constant(images)}, vae


def check_phases(layer):
    """The phase decomposition computes the layer's function (float32 rounding apart)."""
    x = tf.random.stateless_normal((2, *layer.input.shape[1:]), seed=(0, 1))
    expected, got = layer(tf.cast(x, layer.compute_dtype)), phase_transposed_conv(layer, tf.cast(x, layer.compute_dtype))
    error = float(tf.reduce_max(tf.abs(tf.cast(expected, "float32") - tf.cast(got, "float32"))))
    scale = float(tf.reduce_max(tf.abs(tf.cast(expected, "float32"))))
    if error > 0.02 * scale + 1e-6:
        raise AssertionError(f"phase decomposition of {layer.name} differs by {error} (outputs up to {scale})")


def seconds_per_call(step, x, calls):
    start = time.perf_counter()
    for _ in range(calls):
        out = step(x)
    tf.nest.map_structure(lambda t: t.numpy(), out)  # wait for the last call
    return (time.perf_counter() - start) / calls


def op_times(step, x, steps):
    """Milliseconds per call of ``step(x)`` that TensorFlow's executor spent in each op type, over ``steps`` traced calls.

    Reads the profiler's XSpace protobuf through TensorFlow's internal copy of its schema (the
    import below); ``tests/test_benchmarks.py`` runs this, so a TensorFlow that moves it fails there.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    seconds_per_call(step, x, 1)  # traced and warm before the profiler starts
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            seconds_per_call(step, x, steps)
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    per_type = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's threads; their events are "scope/op:OpType"
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # ops, not the executor's own spans (ExecutorState::Process)
                    per_type[name.rsplit(":", 1)[1]] += event.duration_ps / 1e9 / steps
    return dict(per_type)


def print_op_table(architecture, batch, steps, top=16):
    """The ``--ops`` table: each precision's train step, traced, by op type (the ``top`` largest, the rest summed)."""
    times = {precision: op_times(*model_step(architecture, precision, batch, seed=0)[:2], steps)
             for precision in models.PRECISIONS}
    f32, bf16 = models.PRECISIONS
    ranked = sorted(set(times[f32]) | set(times[bf16]), key=lambda op: -max(times[f32].get(op, 0), times[bf16].get(op, 0)))
    print(f"\nwhole train step by op type ({steps} traced steps per precision; ms per step, summed over the"
          " inter-op threads, which overlap)\n")
    print("| op type | float32 ms | bf16 ms |")
    print("| --- | ---: | ---: |")
    for op in ranked[:top]:
        print(f"| {op} | {times[f32].get(op, 0):.2f} | {times[bf16].get(op, 0):.2f} |")
    rest = [sum(t.get(op, 0) for op in ranked[top:]) for t in (times[f32], times[bf16])]
    print(f"| {len(ranked[top:])} other op types | {rest[0]:.2f} | {rest[1]:.2f} |")
    print(f"| all ops | {sum(times[f32].values()):.2f} | {sum(times[bf16].values()):.2f} |")
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="keras_io", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20, help="calls per timing")
    parser.add_argument("--ops", type=int, default=0, metavar="N",
                        help="also trace N whole train steps per precision and print the time per op type")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("layer_profile.py: run it with KERAS_BACKEND=tensorflow (it profiles oneDNN's kernels)")

    variants = {}  # (row key, precision) -> (compiled step, its argument)
    macs, labels = {}, {}
    for precision in models.PRECISIONS:
        step, images, vae = model_step(args.architecture, precision, args.batch, seed=0)
        variants[("whole train step", precision)] = (step, images)
        if precision != "float32":
            step, images, _ = model_step(args.architecture, precision, args.batch, seed=0, float32_output=True)
            variants[("whole train step, float32 output", precision)] = (step, images)
        for part in (vae.encoder, vae.decoder):
            computing = [layer for layer in part.layers if forward_macs(layer)]
            for index, layer in enumerate(computing):
                # Layers are matched across the two builds by position (their names get suffixes).
                key = f"{part.name} {index}"
                first = part is vae.encoder and index == 0  # its input is the images
                variants[(key, precision)] = layer_step(layer, args.batch, seed=1, input_gradient=not first)
                macs[key] = forward_macs(layer)
                labels.setdefault(key, f"{part.name}: {type(layer).__name__} -> {tuple(layer.output.shape[1:])}"
                                       f"{' (float32 always)' if layer.name in models.float32_layers(vae.likelihood) else ''}")
                if isinstance(layer, keras.layers.Conv2DTranspose) and layer.strides == (2, 2) and layer.kernel_size == (3, 3):
                    check_phases(layer)
                    phased = f"{key} phases"
                    variants[(phased, precision)] = layer_step(layer, args.batch, seed=1, call=phase_transposed_conv)
                    macs[phased] = macs[key]
                    labels.setdefault(phased, "... the same as four phase convolutions")
    rows = list(labels)
    for step, x in variants.values():  # warm-up: tracing and oneDNN's primitive creation
        seconds_per_call(step, x, 1)
    times = interleaved({key: lambda step=step, x=x: seconds_per_call(step, x, args.calls)
                         for key, (step, x) in variants.items()}, args.repeats)
    median = {key: statistics.median(values) / args.calls * 1e3 for key, values in times.items()}

    f32, bf16 = models.PRECISIONS
    print(machine())
    print(f"{args.architecture}, batch {args.batch}, median of {args.repeats} rounds of {args.calls} calls; ms per batch\n")
    print("| layer | MFLOP per batch | float32 ms | bf16 ms | bf16 speed-up | float32 GFLOP/s | bf16 GFLOP/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    layers_only = [key for key in rows if not key.endswith(" phases")]
    for key in rows:
        print_row(labels[key], 6 * macs[key] * args.batch, median[(key, f32)], median[(key, bf16)])
    total_flops = 6 * sum(macs[key] for key in layers_only) * args.batch
    sums = [sum(median[(key, precision)] for key in layers_only) for precision in (f32, bf16)]
    print_row("sum of the layers", total_flops, *sums)
    step = [median[("whole train step", precision)] for precision in (f32, bf16)]
    print_row("whole train step", total_flops, *step)
    print(f"| the rest (step minus layers) | | {step[0] - sums[0]:.2f} | {step[1] - sums[1]:.2f} | | | |")
    float32_output = median[("whole train step, float32 output", bf16)]
    print(f"\nbf16 train step with the decoder's last convolution in float32: {float32_output:.2f} ms against "
          f"{step[1]:.2f} ms with it in bf16 ({float32_output / step[1]:.2f}x)")
    ops = print_op_table(args.architecture, args.batch, args.ops) if args.ops else None
    return median, labels, ops


def print_row(label, flops, f32_ms, bf16_ms):
    print(f"| {label} | {flops / 1e6:.0f} | {f32_ms:.2f} | {bf16_ms:.2f} | {f32_ms / bf16_ms:.2f}x "
          f"| {flops / f32_ms / 1e6:.0f} | {flops / bf16_ms / 1e6:.0f} |")


if __name__ == "__main__":
    main()
