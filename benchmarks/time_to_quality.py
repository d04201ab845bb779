"""Time to quality: how soon this package's default recipe beats what the keras-io-style reference reaches in 30 epochs.

    python benchmarks/time_to_quality.py OUT [--seeds 0 1 2] [--recipe FLAGS] [--reference-input numpy keras_input]

1. The keras-io-style reference (``harness.keras_io_reference``: GradientTape step, sigmoid
   output, cross-entropy on probabilities, Adam 1e-3, batch 128) trains ``--reference-epochs``
   (30) on the 55,000 training images of the package's 55,000/5,000 split; its test -ELBO (nats,
   28x28 pixels, one posterior sample per image with fixed noise) is scored after every epoch.
   Saved as OUT/reference.json, and reused from there by a later call. It gets NumPy arrays, as
   the example does; ``--reference-input keras_input`` feeds it this package's input pipeline
   instead (without tf.data's autotuner, whose stalls the NumPy path suffers), so that only its
   train step is on the clock (saved as OUT/reference-keras_input.json). ``--reference-input numpy
   keras_input`` trains (or reuses) both and compares every recipe run with each, so the recipe's
   seeds train once for both comparisons.
2. This package's recipe (``vae train`` with the ``--recipe`` flags) trains through ``train.train``,
   as ``vae train`` does, for each ``--seeds`` seed, into OUT/<recipe>-seed<S>; a benchmark-only
   callback scores the test split after each epoch the same way (on a float32 copy of the
   weights, its time left out of the clock). Nothing in training sees these scores.

Prints, per run and reference: the wall time from the start of training at which the test -ELBO
first reaches the reference's final value, the reference's wall time to that value (its 30
epochs) and their ratio, the final test loss, and the dead units of the encoder's ReLU bottleneck. Everything goes
into OUT/time_to_quality.json too. Scoring is in float32 whatever the training precision.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from harness import BATCH, HeldOutCurve, keras_io_reference, machine, recipe_config

import keras

from mnist_vae import inference
from mnist_vae.config import Config
from mnist_vae.data import ImageBatches, keras_input, load_splits
from mnist_vae.train import train


# How the reference gets its images: NumPy arrays to ``fit``, as the keras-io example does, or this
# package's input (``data.keras_input``: the same images, tf.data without its autotuner, whose
# thread can hold the end of an epoch for seconds), which leaves its train step alone on the clock.
REFERENCE_INPUTS = ("numpy", "keras_input")


def reference(splits, epochs, seed=0, feed="numpy"):
    """(curve [(seconds, test loss) per epoch]) of the keras-io-style reference, fed as ``feed`` says."""
    keras.utils.set_random_seed(seed)
    curve = HeldOutCurve(Config(architecture="keras_io"), splits.test.images, time.perf_counter())  # its layers
    model = keras_io_reference(splits.train.images.shape[1:])
    model.compile(keras.optimizers.Adam(1e-3))
    if feed == "numpy":
        inputs = dict(x=splits.train.images, batch_size=BATCH, shuffle=True)
    else:
        inputs = dict(x=keras_input(ImageBatches(splits.train.images, BATCH, shuffle=True, seed=seed)), shuffle=False)
    model.fit(epochs=epochs, verbose=0, callbacks=[curve], **inputs)
    return curve.curve


def first_reaching(curve, target):
    """Seconds at which ``curve`` first gets to ``target`` or below, or None."""
    return next((seconds for seconds, loss in curve if loss <= target), None)


def saved_reference(out, splits, epochs, feed):
    """The reference fed as ``feed``: from OUT/reference[-FEED].json when an earlier call trained it, else trained and saved there."""
    saved = out / ("reference.json" if feed == "numpy" else f"reference-{feed}.json")
    if saved.exists():
        return json.loads(saved.read_text())
    ref = {"epochs": epochs, "train_images": len(splits.train.images), "input": feed,
           "curve": reference(splits, epochs, feed=feed)}
    saved.write_text(json.dumps(ref, indent=1) + "\n")
    return ref


def compared(curve, ref):
    """When ``curve`` first reaches ``ref``'s final test loss, and how much sooner than the reference got there."""
    seconds, target = ref["curve"][-1]
    reached = first_reaching(curve, target)
    return {"target": target, "reference_seconds": seconds, "reached_at": reached,
            "speed_up": seconds / reached if reached else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the runs and the results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of this package's recipe")
    parser.add_argument("--recipe", default="", metavar="FLAGS",
                        help="`vae train` flags of the recipe, e.g. \"--lr-schedule cosine\" (default: none)")
    parser.add_argument("--name", default="default", help="name of the recipe in the table (default: default)")
    parser.add_argument("--reference-epochs", type=int, default=30)
    parser.add_argument("--reference-input", choices=REFERENCE_INPUTS, nargs="+", default=["numpy"],
                        help="numpy: arrays to fit, as the keras-io example (OUT/reference.json); keras_input: this "
                             "package's input pipeline, its train step alone (OUT/reference-keras_input.json); "
                             "give both to compare each run with each (the first fills the rows' reached_reference_at and speed_up)")
    parser.add_argument("--limit", type=int, help="train on the first N images only (a tiny test run)")
    parser.add_argument("--test-images", type=int, help="score the first N test images only (a tiny test run)")
    args = parser.parse_args(argv)
    splits = load_splits("mnist", Config().validation_size, limit=args.limit, test_limit=args.test_images)
    args.out.mkdir(parents=True, exist_ok=True)
    print(machine(), flush=True)

    references = {feed: saved_reference(args.out, splits, args.reference_epochs, feed)
                  for feed in dict.fromkeys(args.reference_input)}  # in the order given, once each
    ref = references[args.reference_input[0]]

    rows = []
    for seed in args.seeds:
        config = recipe_config(args.recipe, seed, args.limit)
        out = args.out / f"{args.name}-seed{seed}"
        start = time.perf_counter()
        curve = HeldOutCurve(config, splits.test.images, start)
        metrics = train(config, out, verbose=0, callbacks=[curve])
        wall = time.perf_counter() - start - curve.excluded
        vae = keras.saving.load_model(out / "models" / "vae.keras", compile=False)
        dead = inference.dead_relu_units(vae.encoder, splits.test.images)
        against = {feed: compared(curve.curve, r) for feed, r in references.items()}
        first = against[args.reference_input[0]]
        rows.append({"recipe": args.name, "flags": args.recipe, "seed": seed, "curve": curve.curve,
                     "reached_reference_at": first["reached_at"], "speed_up": first["speed_up"],
                     "reference_input": args.reference_input[0], "against": against,
                     "final_test_loss": metrics["test"]["loss"], "wall_seconds": round(wall, 1),
                     "precision": metrics["precision"],
                     "dead_relu_units": {name: list(v) for name, v in dead.items()}})
    results = args.out / "time_to_quality.json"
    previous = json.loads(results.read_text()) if results.exists() else []
    results.write_text(json.dumps(previous + rows, indent=1) + "\n")

    for feed, r in references.items():
        seconds, target = r["curve"][-1]
        print(f"reference ({feed} input): {r['epochs']} epochs on {r['train_images']:,} images, "
              f"test -ELBO {target:.2f} after {seconds:.0f} s of training")
    feeds = list(references)
    print("| recipe | seed | precision | " + " | ".join(f"reaches the {f} reference's value at | speed-up" for f in feeds)
          + " | final test loss | whole run | dead bottleneck units |")
    print("| --- | ---: | --- | " + " | ".join("---: | ---:" for _ in feeds) + " | ---: | ---: | --- |")
    for row in rows:
        cells = []
        for feed in feeds:
            result = row["against"][feed]
            cells.append(f"{result['reached_at']:.0f} s" if result["reached_at"] is not None else "never")
            cells.append(f"{result['speed_up']:.2f}x" if result["speed_up"] else "-")
        dead = ", ".join(f"{d}/{u}" for d, u in row["dead_relu_units"].values()) or "none (no ReLU Dense)"
        print(f"| {row['recipe']} | {row['seed']} | {row['precision']} | {' | '.join(cells)} | "
              f"{row['final_test_loss']:.2f} | {row['wall_seconds']:.0f} s | {dead} |")
    if len(rows) > 1:
        print(f"mean final test loss over seeds {args.seeds}: "
              f"{statistics.mean(r['final_test_loss'] for r in rows):.2f}")
    return ref, rows


if __name__ == "__main__":
    main()
