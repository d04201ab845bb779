"""Crash-safe, resumable training state: a Keras callback that saves it atomically, and restores it before ``fit``.

Why not ``keras.callbacks.BackupAndRestore``: it overwrites ``latest.weights.h5`` in place and then
writes the epoch to a separate JSON file, so a kill mid-write leaves a corrupt file, and a kill
between the two writes pairs new weights with the old epoch (the resumed run silently repeats an
epoch). And it restores through a private attribute of the model; here the restored epoch is
passed to ``fit(initial_epoch=...)``.
"""

import contextlib
import json
import os
import uuid
from pathlib import Path

import keras
import numpy as np

from mnist_vae.errors import UserError
from mnist_vae.atomic import replace_atomically, write_json_atomic


class EpochSync(keras.callbacks.Callback):
    """Start an ``ImageBatches`` at the epoch training (re)starts from.

    The first epoch's iterator is opened after the first ``on_epoch_begin``, so restarting
    there is in time; later epochs are counted by the dataset itself (see ``ImageBatches``).
    """

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self._started = False

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self.batches.restart(epoch)
            self._started = True


class AtomicBackupAndRestore(keras.callbacks.Callback):
    """Saves the training state after every epoch so that it survives a kill at any instant; ``restore`` reads it.

    Each state is a new, uniquely named weights file (weights, optimizer slots and the sampling
    RNG: see ``models.Sampling``); a small JSON pointer naming it, the epoch and
    ``extra_state()`` is renamed into place last, which is the single atomic commit. The previous
    pointer is kept as ``.bkp``, and ``restore`` falls back to it when the newest state cannot be read.

    ``extra_state()`` returns a JSON-able dict saved with each state; ``on_restore(epoch, extra)``
    is called after a state is restored (e.g. to restore the best checkpoint's score). Put this
    callback last, so the state it saves includes what the other callbacks did in the epoch.
    """

    def __init__(self, backup_dir, extra_state=None, on_restore=None, read_only=False, save_scope=None):
        super().__init__()
        self.backup_dir = str(backup_dir)
        self.read_only = read_only  # restore, never save: a data-parallel worker resuming from the chief's state
        self.save_scope = save_scope or contextlib.nullcontext  # what saving runs in (distribute.Cluster.solo_scope)
        self.extra_state = extra_state or dict
        self.on_restore = on_restore
        self._pointer = Path(backup_dir) / "state.json"
        self._previous = Path(backup_dir) / "state.json.bkp"

    @staticmethod
    def saved_state(backup_dir):
        """The newest readable state pointer in ``backup_dir`` (epoch, weights, extra), or {} when none."""
        for pointer in (Path(backup_dir) / "state.json", Path(backup_dir) / "state.json.bkp"):
            try:
                state = json.loads(pointer.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(state, dict):
                return state
        return {}

    def restore(self, model):
        """Load the newest readable state into ``model`` (built and compiled); returns the epoch to start at (0: none).

        Pass it to ``fit(initial_epoch=...)``.
        """
        errors = []
        for pointer in (self._pointer, self._previous):
            if not pointer.exists():
                continue
            try:
                state = json.loads(pointer.read_text())
                if not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(Path(self.backup_dir) / state["weights"])
            except Exception as e:  # a half-written or damaged state: try the older one
                errors.append(f"{pointer.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                continue
            if self.on_restore is not None:
                self.on_restore(state["epoch"], state.get("extra", {}))
            return state["epoch"]
        if errors:
            raise UserError(f"no readable training state in {self.backup_dir} ({'; '.join(errors)}); "
                            "start the run again with --overwrite")
        return 0

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if self.read_only or (loss is not None and not np.isfinite(loss)):
            return  # never replace a good state with a diverged one
        with self.save_scope():
            self._save_state(epoch + 1)  # the epoch a resumed run starts at

    def _save_state(self, epoch):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:05d}-{uuid.uuid4().hex[:8]}.weights.h5"
        replace_atomically(self.model.save_weights, backup / name, suffix=".weights.h5")
        state = {"epoch": epoch, "weights": name, "extra": self.extra_state()}
        if self._pointer.exists():
            os.replace(self._pointer, self._previous)
        write_json_atomic(self._pointer, state)  # the commit point
        self._remove_unreferenced()

    def _remove_unreferenced(self):
        keep = set()
        for pointer in (self._pointer, self._previous):
            try:
                keep.add(json.loads(pointer.read_text())["weights"])
            except (OSError, ValueError, KeyError):
                pass
        for path in Path(self.backup_dir).glob("*.weights.h5"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

