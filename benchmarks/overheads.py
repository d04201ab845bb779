"""Where a `vae train` run's wall time goes: training steps against everything around them.

    python benchmarks/overheads.py OUT_DIR [--epochs 3] [--project 30] [-- vae train flags ...]

Runs `vae train` in this process (a fresh run in OUT_DIR/run) with clocks around its phases:
start-up (imports, data, model, compile: up to fit's first callback), per epoch the training
steps (input pipeline included), the validation pass and the epoch-end callbacks, and after fit
the saving, the loss evaluation of the splits and the plots. It reads them from a Keras callback
of its own, passed to ``train(callbacks=...)``: the package is run as it is, nothing wrapped.

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


def phases(clock):
    """A callback for ``train(callbacks=...)`` that gives ``clock`` every phase of the run, from Keras' own hooks.

    Between validation's end and the next epoch's start (or the end of fit) the epoch-end
    callbacks run; from the end of fit to ``train``'s return, the saving, scoring and plots.
    """
    import keras

    class Phases(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.mark = time.perf_counter()
            clock.add("start-up (imports, data, build, compile)", self.mark - PROCESS_START)

        def on_epoch_begin(self, epoch, logs=None):
            self._close_epoch_end()
            clock.epochs.append({})
            self.mark = time.perf_counter()

        def on_test_begin(self, logs=None):
            now = time.perf_counter()
            clock.add("training steps", now - self.mark, epoch_phase=True)
            self.mark = now

        def on_test_end(self, logs=None):
            now = time.perf_counter()
            clock.add("validation pass", now - self.mark, epoch_phase=True)
            self.mark, self.validated = now, True

        def on_train_end(self, logs=None):
            self._close_epoch_end()
            clock.fit_ended = time.perf_counter()

        def _close_epoch_end(self):
            if getattr(self, "validated", False):
                clock.add("epoch end: callbacks (checkpoint, logs, pictures, resume state)",
                          time.perf_counter() - self.mark, epoch_phase=True)
                self.validated = False

    return Phases()


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

    from harness import machine  # imports Keras: counted in start-up
    from mnist_vae.cli import build_parser, config_from_args
    from mnist_vae.train import train

    clock = Clock()
    config = config_from_args(build_parser().parse_args(["train", *args.flags, "--epochs", str(args.epochs)]))
    train(config, f"{args.out}/run", verbose=0, callbacks=[phases(clock)])
    clock.add("after fit: save, score the splits, plots", time.perf_counter() - clock.fit_ended)
    rows, total = project(clock, args.project)
    training = rows["training steps"][0]
    print(machine())
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
