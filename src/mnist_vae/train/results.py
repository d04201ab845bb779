"""After ``fit``, on the chief: the saved models, ``metrics.json`` (every split scored in float32) and plots."""

import math

import numpy as np

from mnist_vae import report
from mnist_vae.errors import UserError
from mnist_vae.estimators import LossTerms, evaluate_losses
from mnist_vae.models import set_precision
from mnist_vae.atomic import save_model_atomic, write_json_atomic
from mnist_vae.train.session import EVAL_BATCH_SIZE

# metrics.json's train loss: the first images of the training split, as many as the test set's 10,000
# (all 55,000 cost about 1% of a 30-epoch seed run on a 2-core CPU).
TRAIN_LOSS_IMAGES = 10_000


def finish(run, config, session):
    """Save, score and plot the trained ``session``; returns the metrics dict, as written to ``metrics.json``."""
    history, checkpoint, splits = session.history, session.checkpoint, session.splits
    last = {name: values[-1] for name, values in history.history.items() if values}
    diverged = {name: last[name] for name in ("loss", "val_negative_elbo")
                if name in last and not math.isfinite(last[name])}
    if diverged:
        raise UserError(_divergence_message(run, checkpoint.best, history.epoch[-1] + 1, diverged))
    vae = session.vae
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
        "precision": session.precision,
        "units": f"nats per image, summed over the original {vae.geometry.describe()}",
        "epochs": config.epochs,
        "best_val_loss": float(checkpoint.best),
        "fit_seconds_this_session": round(session.seconds, 2),
        "seconds_per_epoch": _mean_epoch_seconds(history),
        "binarize": config.binarize,
        "likelihood": vae.likelihood,
        "conditional": vae.conditional,
        "test_images": len(splits.test),
        "train_loss_images": min(len(splits.train), TRAIN_LOSS_IMAGES),
        **{name: evaluate_losses(vae, images[scored[name]], EVAL_BATCH_SIZE, getattr(splits, name).labels[scored[name]],
                                 terms=terms)
           for name, images in session.eval_images.items()},
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


def _mean_epoch_seconds(history):
    times = history.history.get("epoch_seconds", [])
    return round(float(np.mean(times)), 2) if times else None
