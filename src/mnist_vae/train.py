"""Training: one function that turns a ``Config`` into a finished run directory."""

import dataclasses
import math
import shutil
import time

import keras
import numpy as np

from mnist_vae import callbacks as cbs
from mnist_vae import report
from mnist_vae.config import Config
from mnist_vae.data import ImageBatches, load_splits
from mnist_vae.errors import UserError
from mnist_vae.evaluate import evaluate_losses
from mnist_vae.models import build_vae
from mnist_vae.rundir import RunDir, save_model_atomic, write_json_atomic, write_text_atomic

UNITS = "nats per image, summed over the original 28x28 pixels"


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training and validation) to the epoch logs, so CSV and TensorBoard get it."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def prepare_run_dir(run, config, resume, overwrite):
    """Check ``run`` may be written as asked, clear it for --overwrite, write ``config.json``."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one")
    if resume:
        if not run.config.exists():
            raise UserError(f"{run.root}: no run to resume (no config.json); start one without --resume")
        saved = Config.load(run.config)
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.name != "epochs" and getattr(saved, f.name) != getattr(config, f.name)]
        if changed:
            raise UserError(
                f"{run.root}: --resume continues the saved run, whose {', '.join(changed)} differ from the "
                "ones given; drop those flags (only --epochs may change) or train into a new --out"
            )
        if run.metrics.exists() and not run.backup.exists():
            raise UserError(f"{run.root}: this run already finished; train a new one with another --out")
    else:
        existing = run.existing_outputs()
        if existing and not overwrite:
            names = ", ".join(p.name for p in existing)
            raise UserError(
                f"{run.root} already holds a run ({names}); pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        run.clear()
    run.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config, config.to_json())


def train(config, out=".", resume=False, overwrite=False, data_dir=None, verbose="auto", callbacks=()):
    """Train a VAE as ``config`` says and write every output under ``out``; returns the metrics dict."""
    config = config.validate()
    run = RunDir(out)
    prepare_run_dir(run, config, resume, overwrite)
    keras.utils.set_random_seed(config.seed)

    splits = load_splits(config.dataset, config.validation_size, config.limit, data_dir=data_dir)
    vae = build_vae(splits.train.images.shape[1:], config.latent_dim, config.architecture, seed=config.seed)
    vae.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
    )

    train_batches = ImageBatches(splits.train.images, config.batch_size, shuffle=True, seed=config.seed)
    val_batches = ImageBatches(splits.validation.images, config.batch_size)
    checkpoint = cbs.AtomicModelCheckpoint(str(run.checkpoint), monitor="val_loss", save_best_only=True)

    def restore_best(epoch, extra):
        checkpoint.best = extra.get("best_val_loss", checkpoint.best)

    backup = cbs.AtomicBackupAndRestore(
        str(run.backup),
        extra_state=lambda: {"best_val_loss": None if checkpoint.best is None else float(checkpoint.best)},
        on_restore=restore_best,
    )
    callback_list = [
        EpochTimer(),
        cbs.EpochSetter(train_batches),
        backup,  # restores before the others start, so they see the resumed epoch
        checkpoint,
        cbs.ResumableCSVLogger(str(run.history), resumed_from=lambda: backup.restored_epoch),
        keras.callbacks.TerminateOnNaN(),
        *cbs.tensorboard_callbacks(run.logs, splits.validation.images[:10], config.seed, config.grid_size),
        *callbacks,
    ]
    start = time.perf_counter()
    history = vae.fit(
        train_batches, validation_data=val_batches, epochs=config.epochs,
        callbacks=callback_list, verbose=verbose,
    )
    seconds = time.perf_counter() - start
    losses = history.history.get("loss", [])
    if losses and not math.isfinite(losses[-1]):
        raise UserError(
            f"training diverged (loss {losses[-1]}) at epoch {history.epoch[-1] + 1}; "
            f"{run.checkpoint} keeps the best model so far; try a lower --learning-rate"
        )

    run.models.mkdir(parents=True, exist_ok=True)
    save_model_atomic(vae, run.vae)
    save_model_atomic(vae.encoder, run.encoder)
    save_model_atomic(vae.decoder, run.decoder)

    metrics = {
        "dataset": config.dataset,
        "units": UNITS,
        "epochs": config.epochs,
        "best_val_loss": None if checkpoint.best is None else float(checkpoint.best),
        "fit_seconds_this_session": round(seconds, 2),
        "seconds_per_epoch": _mean_epoch_seconds(history),
        **{
            name: evaluate_losses(vae, split.images, config.batch_size)
            for name, split in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
        },
    }
    write_json_atomic(run.metrics, metrics)
    report.write_plots(run, vae.encoder, vae.decoder, splits.test, splits.spec.class_names, config)
    # Only now is everything written: the resume state is no longer needed.
    shutil.rmtree(run.backup, ignore_errors=True)
    return metrics


def _mean_epoch_seconds(history):
    times = history.history.get("epoch_seconds", [])
    return round(float(np.mean(times)), 2) if times else None
