"""What the run shows while it trains: latent statistics per epoch, and TensorBoard's scalars and pictures."""

import warnings
from pathlib import Path

import keras
import numpy as np

from mnist_vae import inference, losses, plots


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
