"""The run's best model and its history: saved atomically, never from a diverged epoch, resumable."""

import csv
import time
from pathlib import Path

import keras
import numpy as np

from mnist_vae.atomic import replace_atomically


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model as a ``.keras`` file whenever ``monitor`` reaches a new minimum; ``best`` is that minimum.

    Why not ``keras.callbacks.ModelCheckpoint``: it saves in place, so a kill during the save
    destroys the best model found so far (here a temporary file is renamed over it), and it takes
    the first epoch as the best whatever its score, NaN included: here an epoch whose monitored
    value is not finite, or whose weights are not all finite, is never saved.
    """

    def __init__(self, filepath, monitor):
        super().__init__()
        self.filepath, self.monitor, self.best = Path(filepath), monitor, float("inf")

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None or not np.isfinite(current) or not current < self.best:
            return
        if all_weights_finite(self.model):
            self.best = current
            replace_atomically(self.model.save, self.filepath, suffix=".keras")


def all_weights_finite(model):
    """Whether every weight of ``model`` is finite (a diverged step can leave NaN behind a finite loss)."""
    return all(np.isfinite(w).all() for w in model.get_weights())


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """``CSVLogger`` in append mode that first drops rows of epochs a resumed run will redo.

    Why: after a kill the history may hold an epoch newer than the last saved state; appending
    blindly would list that epoch twice. The first ``on_epoch_begin`` says where training
    (re)starts, so the file is opened there rather than in ``on_train_begin``.
    """

    def __init__(self, filename):
        super().__init__(filename, append=True)
        self._opened = False

    def on_train_begin(self, logs=None):
        self._opened = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._opened:
            return
        path = Path(self.filename)
        if path.exists():
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < epoch]
                replace_atomically(lambda tmp: _write_rows(tmp, kept), path)
        super().on_train_begin()
        self._opened = True


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training and validation) to the epoch logs, so CSV and TensorBoard get it."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
