"""Training: one function that turns a ``Config`` into a finished run directory."""

import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

from mnist_vae import callbacks as cbs
from mnist_vae import distribute, report
from mnist_vae.config import UNPINNED, Config
from mnist_vae.data import ImageBatches, held_out_images, keras_input, load_splits, one_hot
from mnist_vae.errors import UserError
from mnist_vae.evaluate import LossTerms, evaluate_losses
from mnist_vae.losses import KLSchedule
from mnist_vae.models import ModelConfig, build_vae, set_precision
from mnist_vae.precision import check_precision_runs, emulated_bf16_warning, resolve_precision
from mnist_vae.rundir import (RunDir, check_output_folder, discard, locked, save_model_atomic, training_bytes,
                              write_json_atomic, write_text_atomic)

EVAL_BATCH_SIZE = 500
# metrics.json's train loss: the first images of the training split, as many as the test set's 10,000
# (all 55,000 cost about 1% of a 30-epoch seed run on a 2-core CPU).
TRAIN_LOSS_IMAGES = 10_000
LATENT_MONITOR_IMAGES = 1000  # validation images whose posteriors give the per-epoch active units and KL per dimension


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training and validation) to the epoch logs, so CSV and TensorBoard get it."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def check_run_dir(run, config, resume, overwrite):
    """Refuse, before anything is written, a run directory that cannot be used as asked."""
    if resume:
        if not run.config.exists():
            raise UserError(f"{run.root}: no run to resume (no config.json); start one without --resume")
        saved = Config.load(run.config)
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.name not in UNPINNED and getattr(saved, f.name) != getattr(config, f.name)]
        if changed:
            raise UserError(
                f"{run.root}: --resume continues the saved run, whose {', '.join(changed)} differ from the "
                "ones given; drop those flags (only --epochs and --test-limit may change) or train into a new --out"
            )
        if run.metrics.exists() and not run.resume_state.exists():
            raise UserError(f"{run.root}: this run already finished; train a new one with another --out")
        check_state_matches(run, saved)
        return
    found = run.output_files()
    if not found:
        return
    names = ", ".join(sorted({str(p.relative_to(run.root)) for p in found})[:4])
    if not run.holds_run():
        # Files at a run's names but no config.json of ours: the user's (or another tool's), never replaced.
        raise UserError(f"{run.root} holds files at the names a run writes ({names}) that no `vae train` wrote "
                        "(its config.json is not one this package writes); they are kept: choose another --out")
    if not overwrite:
        raise UserError(f"{run.root} already holds a run ({names}); pass --resume to continue it, --overwrite to "
                        "replace it (its files are deleted by name once the new run has started), or choose "
                        "another --out")


def check_state_matches(run, config):
    """Refuse a resume whose ``config.json`` no longer describes the model its training state saved."""
    state = cbs.AtomicBackupAndRestore.saved_state(run.backup)
    saved = state.get("extra", {}).get("config")
    if saved is None:
        return
    fields = {f.name for f in dataclasses.fields(Config)}
    differ = [name for name, value in saved.items()
              if name in fields and name not in UNPINNED and getattr(config, name) != value]
    if differ:
        name = differ[0]
        raise UserError(f"{run.config}: {name} is {getattr(config, name)!r}, but the training state in {run.backup} "
                        f"was saved with {name} {saved[name]!r}; restore that value in config.json to keep its "
                        f"{state.get('epoch', 0)} finished epochs, or train into a new --out")


def start_run_dir(run, config, resume):
    """Replace an old run (never for --resume) and write ``config.json``.

    The old run's files are moved aside first (all or nothing), and deleted only once the new
    ``config.json`` is written; what no run wrote stays, and is named on stderr.
    """
    aside = None if resume else run.set_aside()
    write_text_atomic(run.config, config.to_json())
    if aside is not None:
        discard(aside)
    if not resume:
        kept = [str(p) for p in run.remove_empty_folders()]
        if kept:
            shown = ", ".join(kept[:8]) + (f" and {len(kept) - 8} more" if len(kept) > 8 else "")
            print(f"vae train: kept {len(kept)} entries in {run.root} that no run wrote: {shown}", file=sys.stderr)


def train(config, out=".", resume=False, overwrite=False, data_dir=None, verbose="auto", callbacks=()):
    """Train a VAE as ``config`` says and write every output under ``out``; returns the metrics dict
    (None on a data-parallel worker other than the chief, which writes nothing).

    The run folder is locked for the whole call (a second process on it fails at once), and
    nothing in it is written before the data, the folder's permissions and its free space check out.
    """
    config = config.validate()
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one")
    check_output_folder(out)
    # First: tf.distribute's multi-worker collectives must be set up before TensorFlow runs anything.
    cluster = distribute.start(config.distribute, config.batch_size)
    run = RunDir(out)
    if not cluster.chief:
        return _train_as_worker(cluster, run, config, resume, overwrite, data_dir)
    with locked(run, "vae train", create=True):
        check_run_dir(run, config, resume, overwrite)
        cluster.wait_for_all()  # every worker has checked the folder before this one writes to it
        return _train_locked(run, config, resume, data_dir, verbose, callbacks, cluster)


def _train_as_worker(cluster, run, config, resume, overwrite, data_dir):
    """A data-parallel worker other than the chief: the same steps, nothing written.

    It checks the run folder as the chief does (so both refuse a bad one alike) and, resuming,
    restores the chief's state from it; ``distribute`` says what the workers share.
    """
    check_run_dir(run, config, resume, overwrite)
    cluster.wait_for_all()
    return _train_locked(run, config, resume, data_dir, 0, (), cluster)


def _train_locked(run, config, resume, data_dir, verbose, callbacks, cluster):
    keras.utils.set_random_seed(config.seed)
    # Data problems surface before anything is written, so a failed start leaves no half run.
    splits = load_splits(config.dataset, config.validation_size, config.limit, data_dir=data_dir,
                         test_limit=config.test_limit)
    precision = resolve_precision(config.precision)
    check_precision_runs(precision)
    note = emulated_bf16_warning(precision)
    if note and cluster.chief:
        print(f"vae train: warning: {note}", file=sys.stderr)

    model_config = ModelConfig(architecture=config.architecture, likelihood=config.resolved_likelihood(),
                               latent_dim=config.latent_dim, pixel_layers=config.pixel_layers,
                               num_classes=len(splits.spec.class_names) if config.conditional else 0,
                               image_shape=splits.spec.geometry.model_shape, pad=splits.spec.geometry.pad)

    def build():
        return build_vae(model_config, seed=config.seed, precision=precision)

    with cluster.model_scope():
        vae = build()
    if cluster.chief:
        run.check_writable()
        run.check_free_space(training_bytes(4 * vae.count_params(), config.epochs))
        start_run_dir(run, config, resume)
    conditioning = (lambda split: one_hot(split.labels, vae.num_classes)) if vae.conditional else (lambda split: None)
    train_batches = ImageBatches(splits.train.images, config.batch_size, shuffle=True, seed=config.seed,
                                 binarize=config.binarize == "dynamic", labels=conditioning(splits.train),
                                 shard=cluster.input_shard)
    # Evaluation inputs: under --binarize dynamic, each split binarised once with a fixed seed.
    eval_images = {name: held_out_images(getattr(splits, name).images, config.binarize)
                   for name in ("train", "validation", "test")}
    with cluster.model_scope():
        vae.compile(
            optimizer=make_optimizer(config, len(train_batches)),
            kl_weight=KLSchedule(config.beta, config.kl_warmup, len(train_batches)),
            free_bits=config.free_bits,
            jit_compile=config.jit_compile or cluster.needs_jit,
            steps_per_execution=largest_divisor(len(train_batches), steps_per_execution(config, cluster)),
        )
        distribute.adapt_model(vae, cluster)
    # What the chief scores and pictures: under several tf.distribute workers, a copy outside the
    # strategy (see callbacks.LocalCopy); else the trained model itself.
    local = build() if cluster.collective_predict else vae
    # Forward passes only: larger batches are faster and give the same per-image means.
    val_batches = ImageBatches(eval_images["validation"], EVAL_BATCH_SIZE, labels=conditioning(splits.validation),
                               shard=cluster.input_shard)
    # Chosen on the unweighted negative ELBO: a warm-up's down-weighted KL would favour early epochs.
    checkpoint = cbs.AtomicModelCheckpoint(str(run.checkpoint), monitor="val_negative_elbo", mode="min",
                                           save_best_only=True)

    def restore_best(epoch, extra):
        checkpoint.best = extra.get("best_val_loss", checkpoint.best)
        earlier = extra.get("precision")
        if earlier and earlier != precision and cluster.chief:
            print(f"vae train: this run trained in {earlier} up to epoch {epoch}; here --precision "
                  f"{config.precision} is {precision}, so it continues in {precision} (its remaining epochs "
                  f"round differently from an uninterrupted run's)", file=sys.stderr)

    backup = cbs.AtomicBackupAndRestore(
        str(run.backup),
        extra_state=lambda: {"best_val_loss": None if checkpoint.best is None else float(checkpoint.best),
                             "precision": precision, "config": dataclasses.asdict(config)},
        on_restore=restore_best,
        read_only=not cluster.chief,
        save_scope=cluster.solo_scope,
    )
    if cluster.chief:
        own = [
            *([cbs.LocalCopy(local)] if local is not vae else []),
            # Before the CSV and TensorBoard loggers, which write the scalars it adds to the epoch's logs.
            cbs.LatentMonitor(eval_images["validation"][:LATENT_MONITOR_IMAGES],
                              splits.validation.labels[:LATENT_MONITOR_IMAGES], run.logs, model=local),
            cbs.ResumableCSVLogger(str(run.history)),
            checkpoint,
            keras.callbacks.TerminateOnNaN(),
            *cbs.tensorboard_callbacks(run.logs, eval_images["validation"][:10], splits.validation.labels[:10],
                                       config.seed, config.grid_size, model=local),
            *callbacks,
        ]
        callback_list = [
            EpochTimer(),
            cbs.EpochSync(train_batches),
            *([cbs.Solo(own, cluster.solo_scope)] if cluster.solo is not None else own),
            backup,  # last: the state it saves includes the epoch's checkpoint score and history row
        ]
    else:  # the same steps and validation (collective operations), nothing written
        callback_list = [cbs.EpochSync(train_batches), keras.callbacks.TerminateOnNaN(), backup]
    start = time.perf_counter()
    with cluster.fit_scope():
        history = vae.fit(
            keras_input(train_batches), validation_data=keras_input(val_batches), epochs=config.epochs,
            callbacks=callback_list, verbose=verbose,
            # ImageBatches shuffles by (seed, epoch). Keras' own shuffle would permute the batch
            # indices with NumPy's global RNG, which a resumed process cannot reproduce.
            shuffle=False,
        )
    if not cluster.chief:
        return None
    seconds = time.perf_counter() - start
    last = {name: values[-1] for name, values in history.history.items() if values}
    diverged = {name: last[name] for name in ("loss", "val_negative_elbo")
                if name in last and not math.isfinite(last[name])}
    if diverged:
        raise UserError(_divergence_message(run, checkpoint.best, history.epoch[-1] + 1, diverged))

    if local is not vae:
        local.set_weights(vae.get_weights())
        vae = local  # from here on, nothing is collective
    run.models.mkdir(parents=True, exist_ok=True)
    save_model_atomic(vae, run.vae)
    save_model_atomic(vae.encoder, run.encoder)
    save_model_atomic(vae.decoder, run.decoder)

    # Reported losses and plots in float32, whatever the training precision (the saved files keep it).
    set_precision(vae, "float32")
    scored = {"train": slice(TRAIN_LOSS_IMAGES), "validation": slice(None), "test": slice(None)}
    terms = LossTerms(vae)  # one compiled scorer for the three splits: a new one per split retraces
    metrics = {
        "dataset": config.dataset,
        "precision": precision,
        "units": f"nats per image, summed over the original {vae.geometry.describe()}",
        "epochs": config.epochs,
        "best_val_loss": None if checkpoint.best is None else float(checkpoint.best),
        "fit_seconds_this_session": round(seconds, 2),
        "seconds_per_epoch": _mean_epoch_seconds(history),
        "binarize": config.binarize,
        "likelihood": vae.likelihood,
        "conditional": vae.conditional,
        "test_images": len(splits.test),
        "train_loss_images": min(len(splits.train), TRAIN_LOSS_IMAGES),
        **{name: evaluate_losses(vae, images[scored[name]], EVAL_BATCH_SIZE, getattr(splits, name).labels[scored[name]],
                                 terms=terms)
           for name, images in eval_images.items()},
    }
    write_json_atomic(run.metrics, metrics)
    report.write_plots(run, vae, splits.test, splits.spec.class_names, config)
    # Only now is everything written: the resume state is no longer needed.
    run.remove_backup()
    return metrics


def _divergence_message(run, best, epoch, diverged):
    what = ", ".join(f"{name} {value}" for name, value in diverged.items())
    if best is not None and math.isfinite(best) and run.checkpoint.exists():
        kept = f"{run.checkpoint} keeps the best model so far (validation loss {best:.2f})"
    else:
        kept = "no epoch ended with a finite loss, so there is no good checkpoint"
    return f"training diverged ({what}) in epoch {epoch}; {kept}; try a lower --learning-rate"


def make_optimizer(config, steps_per_epoch):
    """Adam at ``config.learning_rate``, warmed up over ``config.lr_warmup`` epochs, then decayed as
    ``config.lr_schedule`` says over the remaining configured epochs."""
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = config.lr_warmup * steps_per_epoch
    # Cosine to 1% of the start by the last step (Loshchilov & Hutter, 2017); "constant" is the
    # same curve with a floor of 100%. The optimizer's step counter is saved with the resume state,
    # so a resumed run continues the same curve.
    floor = {"constant": 1.0, "cosine": 0.01}[config.lr_schedule]
    if not warmup_steps:  # the schedules of every run before lr_warmup existed, unchanged
        if config.lr_schedule == "constant":
            return keras.optimizers.Adam(config.learning_rate)
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps,
                                                                            alpha=floor))
    # Keras's CosineDecay warms up linearly from its initial rate (0 here) to warmup_target, then
    # decays from there over decay_steps.
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        0.0, total_steps - warmup_steps, alpha=floor, warmup_target=config.learning_rate, warmup_steps=warmup_steps))


def steps_per_execution(config, cluster=None):
    """``config.steps_per_execution``, or 1 on the PyTorch backend, whose trainer runs one step per call, and
    under several tf.distribute workers, where Keras' multi-step loop fails to run (a placeholder in its
    ``while`` condition is never fed; TensorFlow 2.21, Keras 3.15)."""
    if keras.backend.backend() == "torch" or (cluster is not None and cluster.collective_predict):
        return 1
    return config.steps_per_execution


def largest_divisor(n, at_most):
    """The largest divisor of ``n`` not above ``at_most``.

    Keras' progress bar counts whole executions, so a ``steps_per_execution`` that does not
    divide the batches per epoch shows e.g. "432/430".
    """
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def _mean_epoch_seconds(history):
    times = history.history.get("epoch_seconds", [])
    return round(float(np.mean(times)), 2) if times else None
