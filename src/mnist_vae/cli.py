"""The ``vae`` command: parse arguments, map them onto ``Config``, call the library."""

import argparse
import dataclasses
import errno
import os
import sys

from mnist_vae.commands import COMMANDS, ClassifierTrainOptions
from mnist_vae.config import PRESETS, Config
from mnist_vae.errors import UserError
from mnist_vae.flags import add_flags, values


class UsageError(UserError):
    """A command line argparse could not parse; the message names the command to ask for --help."""

    def __init__(self, prog, message):
        super().__init__(f"{message} (see `{prog} --help`)")
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line (not a usage block and the error) and exit 2.

    It raises ``UsageError`` instead of exiting, so ``main`` reports it like every other bad input.
    """

    def error(self, message):
        raise UsageError(self.prog, message)


def build_parser():
    """The argument parser of ``vae``: each command's flags from its options dataclass (``commands``)."""
    parser = Parser(prog="vae", description="Variational autoencoders on MNIST-family images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,plot,evaluate,classifier,serve,export,sweep}")
    for name, options in COMMANDS.items():
        command = sub.add_parser(name, help=options.__doc__)
        add_flags(command, options)
        if name == "train":
            # No defaults applied: only flags the user typed reach the namespace, so they can override a
            # --config file or be checked against a resumed run's saved config.
            add_flags(command.add_argument_group("training configuration (defaults from Config; see config.json)"),
                      Config, keep_unset=True)
    classifier = sub.add_parser("classifier", help="the per-dataset CNN that scores sample quality")
    actions = classifier.add_subparsers(dest="action", required=True, metavar="{train}")
    add_flags(actions.add_parser("train", help=ClassifierTrainOptions.__doc__), ClassifierTrainOptions)
    return parser


def config_from_args(args):
    """Config = defaults <- saved run (--resume), --config file or --preset <- flags typed on the command line."""
    given = values(args, Config)
    if args.config is not None and args.preset is not None:
        raise UserError("--config and --preset both give a starting configuration; pass one")
    if args.resume and args.preset is not None:
        raise UserError("--resume continues with the run's saved config.json; drop --preset")
    if args.resume and (args.out / "config.json").exists():
        base = Config.load(args.out / "config.json")
    elif args.config is not None:
        base = Config.load(args.config)
    elif args.preset is not None:
        # Validated once with the flags applied: a preset's field may be overridden into validity.
        base = Config(**PRESETS[args.preset])
    else:
        base = Config()
    return dataclasses.replace(base, **given).validate()


def run_train(args):
    """``vae train``."""
    from mnist_vae.train import train

    config = config_from_args(args)
    metrics = train(config, args.out, resume=args.resume, overwrite=args.overwrite,
                    data_dir=args.data_dir, verbose=0 if args.quiet else "auto")
    if metrics is None:  # a data-parallel worker other than the chief, which reports for all
        return
    print(f"test loss {metrics['test']['loss']:.2f} nats/image "
          f"(reconstruction {metrics['test']['reconstruction_loss']:.2f}, KL {metrics['test']['kl_loss']:.2f}); "
          f"outputs in {args.out.resolve()}")


def run_plot(args):
    """``vae plot DIR``."""
    from mnist_vae.report import plot_run

    for path in plot_run(args.dir, dims=tuple(args.dims), grid_size=args.grid_size, data_dir=args.data_dir):
        print(path)


def run_evaluate(args):
    """``vae evaluate DIR``."""
    from mnist_vae.evaluate import evaluate_run, format_table, sample_quality_run
    from mnist_vae.precision import check_precision_runs, emulated_bf16_warning

    if args.sample_quality:
        from mnist_vae.quality import format_quality

        if args.precision is not None:
            raise UserError("--precision is read by the likelihood evaluation, not --sample-quality; drop one")
        print(format_quality(sample_quality_run(args.dir, args.classifier, args.seed, args.data_dir, args.samples)))
        print(f"wrote {args.dir / 'sample_quality.json'}")
        return
    if args.classifier is not None or args.samples is not None:
        raise UserError("--classifier and --samples are read by --sample-quality; add it")
    precision = args.precision or "float32"
    check_precision_runs(precision)
    warning = emulated_bf16_warning(precision)
    if warning:
        print(f"vae evaluate: warning: {warning}", file=sys.stderr)
    result = evaluate_run(args.dir, args.split, args.iw_samples, args.batch_size, args.chunk_size,
                          args.limit, args.seed, args.data_dir, precision)
    print(format_table(result))
    print(f"wrote {args.dir / 'evaluation.json'}")


def run_classifier(args):
    """``vae classifier train``."""
    from mnist_vae.config import BOUNDS, check_range
    from mnist_vae.quality import train_classifier

    check_range("--epochs", args.epochs, 1, 1000)
    check_range("--seed", args.seed, *BOUNDS["seed"])
    if args.limit is not None:
        check_range("--limit", args.limit, 1, BOUNDS["limit"][1])
    path, accuracy = train_classifier(args.dataset, args.out, args.epochs, seed=args.seed, data_dir=args.data_dir,
                                      verbose=0 if args.quiet else "auto", limit=args.limit)
    print(f"{args.dataset} classifier: test accuracy {accuracy:.2%}; saved {path}")


def run_serve(args):
    """``vae serve DIR``."""
    from mnist_vae.serve import serve

    serve(args.dir, args.host, args.port, data_dir=args.data_dir, allow_hosts=args.allow_host)


def run_export(args):
    """``vae export DIR``."""
    from mnist_vae.export import export_run

    for path in export_run(args.dir, args.format):
        print(path)


SWEEP_DRIVER = "MNIST_VAE_SWEEP_DRIVER"  # set in the child process that drives Ray (see process_group)


def run_sweep(args):
    """``vae sweep SPEC --out DIR``: the Ray driver runs as a child in a process group of its own."""
    if os.environ.get(SWEEP_DRIVER) != str(os.getppid()):
        from mnist_vae import process_group

        status, interrupted = process_group.run([sys.executable, "-m", "mnist_vae", *args.argv],
                                                env={**os.environ, SWEEP_DRIVER: str(os.getpid())})
        if interrupted:
            raise KeyboardInterrupt
        return status
    _drive_sweep(args)


def _drive_sweep(args):
    import signal

    from mnist_vae import process_group
    from mnist_vae.sweep import run_sweep as sweep

    # The parent's death arrives as SIGTERM: stop as an interrupt would (Ray Tune saves its state).
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        rows = sweep(args.spec, args.out, address=args.address, cpus_per_trial=args.cpus_per_trial,
                     data_dir=None if args.data_dir is None else str(args.data_dir.resolve()))
    finally:
        process_group.end_own_group()
    finished = sum(r["status"] == "finished" for r in rows)
    best = rows[0] if rows else None
    print(f"{len(rows)} trials ({finished} finished, {len(rows) - finished} stopped early or failed); "
          f"table {args.out.resolve() / 'results.csv'}, plot {args.out.resolve() / 'sweep.png'}")
    if best is not None:
        print(f"best validation -ELBO {best['best_val_negative_elbo']:.2f}: "
              + ", ".join(f"{k}={best[k]}" for k in best if k not in ("trial", "status", "epochs", "run_dir",
                                                                       "best_val_negative_elbo", "test_negative_elbo"))
              + f" ({best['run_dir']})")


def _has_resume_state(run_dir):
    from mnist_vae.rundir import RunDir

    try:
        return RunDir(run_dir).resume_state.is_file()
    except (OSError, ValueError):
        return False


RUNS = {"train": run_train, "plot": run_plot, "evaluate": run_evaluate, "classifier": run_classifier,
        "serve": run_serve, "export": run_export, "sweep": run_sweep}


def main(argv=None):
    """Entry point of the ``vae`` console script; returns the exit status.

    Every failure the user can act on is one line on stderr and exit status 2: bad input
    (``UserError``, argparse's errors included), a file system refusing a write (``OSError``) and
    running out of memory. An interrupt exits 130. Anything else is a bug and keeps its traceback.
    """
    command, args = "vae", None
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        command = f"vae {args.command}"
        status = RUNS[args.command](args)
    except UsageError as e:
        return _fail(e.prog, str(e))
    except UserError as e:
        return _fail(command, str(e))
    except OSError as e:
        return _fail(command, _describe_os_error(e, args))
    except MemoryError:
        return _fail(command, "out of memory; try a smaller --batch-size (or --chunk-size for evaluate)")
    except KeyboardInterrupt:
        return _fail(command, f"interrupted; {_how_to_continue(args)}", status=130, label="")
    return status or 0


def _how_to_continue(args):
    """What continues the interrupted command, with its real folder and flags."""
    import shlex

    what = getattr(args, "command", None)
    if what == "train":
        return f"`vae train --resume --out {shlex.quote(str(args.out))}` continues from the last finished epoch"
    if what == "evaluate":
        return f"the same command again (`vae {shlex.join(args.argv)}`) continues from the last finished batch"
    if what == "sweep":
        return f"the same command again (`vae {shlex.join(args.argv)}`) continues the sweep"
    return f"run `vae {shlex.join(args.argv)}` again" if what else "nothing was started"


def _fail(command, message, status=2, label="error: "):
    """Print ``command: error: message`` as one line (control characters in names escaped); return ``status``."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    print(f"{command}: {label}{line}", file=sys.stderr)
    return status


def _describe_os_error(e, args):
    """One line for an ``OSError`` from deep inside a library (h5py, zipfile, TensorBoard, matplotlib).

    Those often carry no file name; the run folder the command works in is named instead.
    """
    run_dir = getattr(args, "out", None) or getattr(args, "dir", None)
    where = os.fsdecode(e.filename) if e.filename else f"a file in {run_dir}" if run_dir else "a file"
    reason = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    hint = "free some space" if e.errno == errno.ENOSPC else "check the path and its permissions"
    if getattr(args, "command", None) == "train" and _has_resume_state(run_dir):
        hint += f", then `vae train --resume --out {run_dir}` continues from the last finished epoch"
    return f"cannot write or read {where} ({reason}); {hint}"
