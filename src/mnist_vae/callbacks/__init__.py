"""Keras callbacks, written where the stock ones fall short of crash-safe, resumable training.

- ``resume``: the training state, saved atomically each epoch and restored before ``fit``;
- ``logs``: the best checkpoint and the history CSV;
- ``monitors``: latent statistics and TensorBoard pictures;
- ``distributed``: what the chief of a data-parallel run does on its own.
"""

from mnist_vae.callbacks.distributed import LocalCopy, Solo
from mnist_vae.callbacks.logs import BestCheckpoint, EpochTimer, ResumableCSVLogger, all_weights_finite
from mnist_vae.callbacks.monitors import LatentMonitor, TensorBoardImages, tensorboard_callbacks
from mnist_vae.callbacks.resume import AtomicBackupAndRestore, EpochSync

__all__ = ["AtomicBackupAndRestore", "BestCheckpoint", "EpochSync", "EpochTimer", "LatentMonitor", "LocalCopy",
           "ResumableCSVLogger", "Solo", "TensorBoardImages", "all_weights_finite", "tensorboard_callbacks"]
