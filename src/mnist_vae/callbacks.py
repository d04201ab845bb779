"""Keras callbacks, extended where the stock ones fall short of crash-safe, resumable training."""

import contextlib
import csv
import json
import os
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np

from mnist_vae import inference, losses, plots
from mnist_vae.errors import UserError
from mnist_vae.rundir import replace_atomically, temporary_beside, write_json_atomic


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


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose saved state survives a kill at any instant.

    Why not the stock callback: it overwrites ``latest.weights.h5`` in place and then writes
    the epoch to a separate JSON file, so a kill mid-write leaves a corrupt file, and a kill
    between the two writes pairs new weights with the old epoch (the resumed run silently
    repeats an epoch). Here each state is a new, uniquely named weights file (weights,
    optimizer slots and the sampling RNG: see ``models.Sampling``); a small JSON pointer naming
    it, the epoch and ``extra_state()`` is renamed into place last, which is the single atomic
    commit. The previous pointer is kept as ``.bkp`` (``double_checkpoint``), and restore falls
    back to it when the newest state cannot be read.

    ``extra_state()`` returns a JSON-able dict saved with each state; ``on_restore(epoch, extra)``
    is called after a state is restored (e.g. to restore the best checkpoint's score). Put this
    callback last, so the state it saves includes what the other callbacks did in the epoch.
    """

    def __init__(self, backup_dir, extra_state=None, on_restore=None, read_only=False, save_scope=None):
        super().__init__(backup_dir, save_freq="epoch", double_checkpoint=True, delete_checkpoint=False)
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

    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError("build the model (call it on a batch) before fit() so its state can be restored")
        errors = []
        for pointer in (self._pointer, self._previous):
            if not pointer.exists():
                continue
            try:
                self._restore(pointer)
                return
            except Exception as e:  # a half-written or damaged state: try the older one
                errors.append(f"{pointer.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        if errors:
            raise UserError(
                f"no readable training state in {self.backup_dir} ({'; '.join(errors)}); "
                "start the run again with --overwrite"
            )

    def _restore(self, pointer):
        state = json.loads(pointer.read_text())
        weights = Path(self.backup_dir) / state["weights"]
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        self.model._initial_epoch = state["epoch"]  # what the stock callback sets; fit() starts there
        if self.on_restore is not None:
            self.on_restore(state["epoch"], state.get("extra", {}))

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if self.read_only or (loss is not None and not np.isfinite(loss)):
            return  # never replace a good state with a diverged one
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        with self.save_scope():
            self._save_state()

    def _save_state(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:05d}-{uuid.uuid4().hex[:8]}.weights.h5"
        replace_atomically(self.model.save_weights, backup / name, suffix=".weights.h5")
        state = {"epoch": self._current_epoch, "weights": name, "extra": self.extra_state()}
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


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that writes a temporary file and renames it, and never saves a diverged model.

    Why: the stock callback saves in place, so a kill during the save destroys the best model
    found so far; with a rename the old checkpoint stays whole until the new one is complete.
    And it takes the first epoch as the best whatever its score, NaN included: here an epoch whose
    monitored value is not finite, or whose weights are not all finite, is never saved.
    """

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None or not np.isfinite(current) or not all_weights_finite(self.model):
            return
        super().on_epoch_end(epoch, logs)

    def _save_model(self, epoch, batch, logs):
        final = self.filepath
        self.filepath = tmp = temporary_beside(final, ".keras")
        try:
            super()._save_model(epoch, batch, logs)
            if os.path.getsize(tmp):  # still empty when the stock logic chose not to save
                os.replace(tmp, final)
        finally:
            self.filepath = final
            if os.path.exists(tmp):
                os.remove(tmp)


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


class Solo(keras.callbacks.Callback):
    """Runs ``callbacks`` (what only the chief of a data-parallel run does) inside ``scope()``.

    Why: under keras.distribution on several processes, anything computed or created inside the
    distribution is a step all processes take together; the chief's own pictures, scores and
    saves step outside it (``distribute.Cluster.solo_scope``). Every hook is forwarded in order.
    """

    def __init__(self, callbacks, scope):
        super().__init__()
        self.callbacks = list(callbacks)
        self.scope = scope

    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def _forward(name):  # noqa: N805  (builds the methods below)
        def hook(self, *args, **kwargs):
            with self.scope():
                for callback in self.callbacks:
                    getattr(callback, name)(*args, **kwargs)
        hook.__name__ = name
        return hook

    for _name in [f"on_{when}_{edge}" for when in ("train", "test", "predict", "epoch") for edge in ("begin", "end")] + \
            [f"on_{when}_batch_{edge}" for when in ("train", "test", "predict") for edge in ("begin", "end")]:
        locals()[_name] = _forward(_name)
    del _name, _forward


class LocalCopy(keras.callbacks.Callback):
    """Keeps ``copy``, a model built outside any tf.distribute strategy, equal to the trained one after each epoch.

    Under a multi-worker strategy, the trained model's ``predict`` is a collective step that every
    worker must take together; the pictures and scores that only the chief makes run on this copy.
    Put it before the callbacks that use it.
    """

    def __init__(self, copy):
        super().__init__()
        self.copy = copy

    def on_epoch_end(self, epoch, logs=None):
        self.copy.set_weights(self.model.get_weights())


class LatentMonitor(keras.callbacks.Callback):
    """Per epoch: the KL weight trained with, active units and KL per latent dimension on fixed images.

    Adds ``kl_weight`` and ``active_units`` to the epoch logs (so history.csv and TensorBoard's
    scalars get them; put it before those callbacks), and, where TensorFlow is installed, writes
    ``kl_per_dimension/zNN`` scalars under ``log_dir/latent``: posterior collapse shows while training.
    """

    def __init__(self, images, labels, log_dir=None, model=None):
        super().__init__()
        self.view = model  # the model to compute with (a ``LocalCopy``'s); None: the one trained
        self.images = images  # (n, H, W, C) fixed validation images
        self.labels = labels  # (n,) their classes (read by a conditional model)
        self.writer = None
        if log_dir is not None:
            try:
                import tensorflow as tf
            except ImportError:
                tf = None
            if tf is not None:
                self._tf = tf
                self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "latent"))

    def on_epoch_end(self, epoch, logs=None):
        vae = self.model if self.view is None else self.view
        z_mean, z_log_var = inference.encode(vae, self.images, self.labels)
        kl_dims = np.asarray(keras.ops.convert_to_numpy(losses.kl_per_dimension(
            keras.ops.convert_to_tensor(z_mean), keras.ops.convert_to_tensor(z_log_var)))).mean(axis=0)
        if logs is not None:
            logs["kl_weight"] = float(keras.ops.convert_to_numpy(self.model.kl_schedule.at_epoch(epoch)))
            logs["active_units"] = int(inference.active_units(z_mean).sum())
        if self.writer is not None:
            with self.writer.as_default():
                for d, value in enumerate(kl_dims):
                    self._tf.summary.scalar(f"kl_per_dimension/z{d:02d}", float(value), step=epoch)
            self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()


class TensorBoardImages(keras.callbacks.Callback):
    """Per-epoch TensorBoard images: reconstructions, samples from fixed noise, the 2-D grid.

    The inputs and the prior noise are fixed for the whole run, so pictures from different
    epochs show the model changing, not the noise.
    """

    def __init__(self, log_dir, images, labels, seed, n_samples=64, grid_size=20, model=None):
        super().__init__()
        self.view = model  # as LatentMonitor's
        import tensorflow as tf  # TensorBoard's writer; an optional dependency outside TF

        self._tf = tf
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "images"))
        self.images = images  # (n, 32, 32, c) fixed validation images
        self.labels = labels  # (n,) their classes
        self.seed = seed
        self.n_samples = n_samples
        self.grid_size = grid_size

    def on_epoch_end(self, epoch, logs=None):
        vae = self.model if self.view is None else self.view
        latent_dim = vae.latent_dim
        originals = vae.geometry.from_model_input(self.images)
        recon = inference.reconstruct(vae, self.images, self.labels, seed=self.seed)
        cols = len(self.images)
        pictures = {"reconstructions": plots.tile_images(np.concatenate([originals, recon]), 2, cols)}
        # Pixel-by-pixel sampling costs hundreds of head passes: fewer pictures per epoch there.
        n_samples = 16 if vae.autoregressive else self.n_samples
        noise = inference.prior_noise(n_samples, latent_dim, self.seed)
        side = int(np.ceil(np.sqrt(n_samples)))
        classes = np.arange(n_samples) % max(vae.num_classes, 1)  # a conditional model: every class in turn
        pictures["samples"] = plots.tile_images(inference.decode(vae, noise, classes, seed=self.seed), side, side)
        # The manifold of one 2-D slice; a conditional model's differ by class (plots/class_manifolds.png).
        if latent_dim >= 2 and not vae.autoregressive and not vae.conditional:
            z, _ = inference.manifold_latents(self.grid_size, latent_dim)
            pictures["manifold"] = plots.tile_images(inference.decode(vae, z), self.grid_size, self.grid_size, pad=0)
        with self.writer.as_default():
            for name, picture in pictures.items():
                picture = picture if picture.ndim == 3 else picture[..., None]
                self._tf.summary.image(name, picture[None].astype("float32"), step=epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


def tensorboard_callbacks(log_dir, images, labels, seed, grid_size, model=None):
    """TensorBoard scalars and images (of ``model``, else the one trained), or none with a warning where TensorFlow is missing."""
    try:
        import tensorflow  # noqa: F401
        import tensorboard  # noqa: F401
    except ImportError:
        warnings.warn("tensorflow/tensorboard not installed: no TensorBoard logs are written", stacklevel=2)
        return []
    return [
        keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0),
        TensorBoardImages(log_dir, images, labels, seed, grid_size=grid_size, model=model),
    ]
