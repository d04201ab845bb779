"""Where a `vae train` run's wall time goes: training steps against everything around them (issue 10 item 7).

    python benchmarks/overheads.py OUT_DIR [--epochs 3] [--project 30] [-- vae train flags ...]

Runs `vae train` in this process (a fresh run in OUT_DIR/run) with clocks around its phases:
start-up (imports, data, model, compile: up to fit's first callback), per epoch the training
steps (input pipeline included), the validation pass and each epoch-end callback, the end of
fit, and after fit the saving, the loss evaluation of the splits and the plots. Nothing in the
package is changed for this: the benchmark wraps ``keras.Model.fit``'s callbacks and the
functions ``train`` calls, by name.

It then projects a run of ``--project`` epochs (the seed recipe's 30) from the measured epochs,
the first epoch counted once (it traces the functions), and prints each phase's seconds and its
share of that projected wall time. The issue's target: per-epoch and after-fit overheads under
5% of a 30-epoch run's wall time on the slower machine. The run's own flags follow ``--``
(for example ``-- --limit 20000``; the defaults are the seed recipe's).
"""

import argparse
import json
import sys
import time

PROCESS_START = time.perf_counter()


class Clock:
    """Seconds per phase name, accumulated; ``laps`` keeps per-epoch values of the epoch phases."""

    def __init__(self):
        self.seconds = {}
        self.epochs = []  # one dict per epoch: phase -> seconds

    def add(self, name, seconds, epoch_phase=False):
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if epoch_phase and self.epochs:
            self.epochs[-1][name] = self.epochs[-1].get(name, 0.0) + seconds

    def timed(self, name, function, epoch_phase=False):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start, epoch_phase)
        return wrapper


def instrument(clock):
    """Wrap fit's callbacks and train()'s after-fit steps so ``clock`` sees every phase; returns the undo."""
    import keras

    from mnist_vae import train as train_module

    class Phases(keras.callbacks.Callback):
        """First in the list: epoch begin, validation begin/end and train end bound the phases."""

        def on_train_begin(self, logs=None):
            self.mark = time.perf_counter()
            clock.add("start-up (imports, data, build, compile)", self.mark - PROCESS_START)

        def on_epoch_begin(self, epoch, logs=None):
            clock.epochs.append({})
            self.mark = time.perf_counter()

        def on_test_begin(self, logs=None):
            now = time.perf_counter()
            clock.add("training steps", now - self.mark, epoch_phase=True)
            self.mark = now

        def on_test_end(self, logs=None):
            now = time.perf_counter()
            clock.add("validation pass", now - self.mark, epoch_phase=True)
            self.mark = now

    original_fit = keras.Model.fit

    def fit(model, *args, callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        for callback in callbacks:
            name = type(callback).__name__
            callback.on_epoch_end = clock.timed(f"epoch end: {name}", callback.on_epoch_end, epoch_phase=True)
            callback.on_train_end = clock.timed("end of fit (callbacks' on_train_end)", callback.on_train_end)
        start = time.perf_counter()
        try:
            return original_fit(model, *args, callbacks=[Phases(), *callbacks], **kwargs)
        finally:
            clock.fit_seconds = time.perf_counter() - start

    patched = [(keras.Model, "fit", fit)]
    for name, label in (("save_model_atomic", "after fit: save the .keras models"),
                        ("evaluate_losses", "after fit: losses of train, validation, test"),
                        ("write_json_atomic", "after fit: write metrics.json")):
        patched.append((train_module, name, clock.timed(label, getattr(train_module, name))))
    patched.append((train_module.report, "write_plots",
                    clock.timed("after fit: plots", train_module.report.write_plots)))
    # fit is inherited by keras.Model: undoing deletes the override rather than copying it down.
    originals = [(owner, name, vars(owner).get(name)) for owner, name, _ in patched]
    for owner, name, wrapped in patched:
        setattr(owner, name, wrapped)

    def undo():
        for owner, name, original in originals:
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
    return undo


def project(clock, epochs):
    """(rows, total): each phase's seconds in a run of ``epochs`` epochs, from the measured ones."""
    measured = clock.epochs
    later = measured[1:] or measured
    rows = {}
    for name in dict.fromkeys(k for epoch in measured for k in epoch):
        first = measured[0].get(name, 0.0)
        mean_later = sum(e.get(name, 0.0) for e in later) / len(later)
        rows[name] = (first + (epochs - 1) * mean_later, mean_later)
    for name, seconds in clock.seconds.items():
        if name not in rows:
            rows[name] = (seconds, None)
    return rows, sum(total for total, _ in rows.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="a new folder; the run is written to OUT/run")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to measure (at least 2: the first traces)")
    parser.add_argument("--project", type=int, default=30, help="epochs of the run the shares are of")
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.flags = flags  # `vae train` flags, after --

    from mnist_vae.cli import build_parser, config_from_args  # imports Keras: counted in start-up
    from mnist_vae.train import train

    clock = Clock()
    config = config_from_args(build_parser().parse_args(["train", *args.flags, "--epochs", str(args.epochs)]))
    undo = instrument(clock)
    try:
        train(config, f"{args.out}/run", verbose=0)
    finally:
        undo()
    rows, total = project(clock, args.project)
    training = rows["training steps"][0]
    print(f"vae train, {args.epochs} epochs measured, projected to {args.project}; "
          f"flags: {' '.join(args.flags) or '(the seed recipe)'}")
    print("| phase | seconds per later epoch | seconds in the run | share of the run |")
    print("| --- | ---: | ---: | ---: |")
    for name, (seconds, per_epoch) in sorted(rows.items(), key=lambda item: -item[1][0]):
        each = "" if per_epoch is None else f"{per_epoch:.2f}"
        print(f"| {name} | {each} | {seconds:.1f} | {100 * seconds / total:.1f}% |")
    around = total - training - rows["start-up (imports, data, build, compile)"][0]
    print(f"| **per-epoch and after-fit overheads** | | **{around:.1f}** | **{100 * around / total:.1f}%** |")
    print(f"| projected wall time | | {total:.1f} | 100% |")
    summary = {"epochs_measured": args.epochs, "projected_epochs": args.project, "flags": args.flags,
               "projected_seconds": total, "overhead_seconds": around, "overhead_share": around / total,
               "phases": {name: seconds for name, (seconds, _) in rows.items()}, "epochs": clock.epochs}
    with open(f"{args.out}/overheads.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
