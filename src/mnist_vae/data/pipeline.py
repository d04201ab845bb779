"""From a located dataset to what ``fit`` reads: splits, the --binarize protocol, seeded batches, the backend's input pipeline."""

import dataclasses
import math

import keras
import numpy as np

from mnist_vae.data.sources import locate
from mnist_vae.data.registry import READERS, DatasetSpec, get_spec
from mnist_vae.errors import UserError

# --binarize choices. "dynamic" (Burda et al., 2015): training pixels are redrawn as Bernoulli
# samples of the grey levels every epoch; held-out splits are binarised once with this seed, so
# every evaluation of every model sees the same binary test set.
BINARIZE = ("none", "dynamic")
HELD_OUT_BINARIZE_SEED = 20151231


@dataclasses.dataclass
class Split:
    """Model-ready images (n, 32, 32, 1) float32 in [0, 1] with their labels (n,) uint8."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.images)


@dataclasses.dataclass
class Splits:
    """Train, validation (held out of the 60,000 training images) and test."""

    train: Split
    validation: Split
    test: Split
    spec: DatasetSpec


def binarize_once(images, seed=HELD_OUT_BINARIZE_SEED):
    """Bernoulli samples of grey levels in [0, 1]: float32 0/1 images of the same shape."""
    return (np.random.default_rng(seed).random(images.shape, dtype=np.float32) < images).astype(np.float32)


def held_out_images(images, binarize):
    """Validation/test images under a --binarize protocol: binarised once (fixed seed) or as they are."""
    return binarize_once(images) if binarize == "dynamic" else images


def load_splits(dataset="mnist", validation_size=5000, limit=None, data_dir=None, download=True, test_limit=None):
    """Load a registered dataset: train (first N - validation_size, then ``limit``), validation, test (then ``test_limit``)."""
    spec = get_spec(dataset)
    folder = locate(spec, data_dir=data_dir, download=download)
    (train_images, train_labels), (test_images, test_labels) = READERS[spec.reader].read(spec, folder)
    n = len(train_images)
    if not 0 < validation_size < n:
        raise UserError(f"--validation-size must be between 1 and {n - 1}, got {validation_size}")
    cut = n - validation_size  # the validation slice is the end of the training file
    train_end = cut if limit is None else min(limit, cut)
    model_input = spec.geometry.to_model_input
    return Splits(
        train=Split(model_input(train_images[:train_end]), train_labels[:train_end]),
        validation=Split(model_input(train_images[cut:]), train_labels[cut:]),
        test=Split(model_input(test_images[:test_limit]), test_labels[:test_limit]),
        spec=spec,
    )


class ImageBatches(keras.utils.PyDataset):
    """Batches of images for ``fit``/``evaluate``; the order is a function of (seed, epoch).

    Deriving each epoch's permutation from the epoch number, rather than from a running RNG,
    means a resumed run sees exactly the batches the uninterrupted run would have seen.

    The dataset counts epochs itself: every request for batch 0 starts the next pass. Keras
    cannot tell it the epoch reliably, because it opens the next epoch's iterator (and tf.data
    starts prefetching from it) before any ``on_epoch_begin`` hook runs. ``restart(epoch)``
    (``EpochSync`` calls it in the first ``on_epoch_begin`` of a ``fit``) makes the next pass
    that epoch.
    """

    def __init__(self, images, batch_size, shuffle=False, seed=0, binarize=False, labels=None, shard=None):
        super().__init__()
        # (index, count): yield only rows [index * n // count, (index + 1) * n // count) of each
        # batch of n, after it is drawn and binarised whole, so that ``count`` processes together
        # feed exactly the batches one would (keras.distribution on several processes).
        self.shard = shard
        self.images = images
        # Per-image conditioning (one-hot labels, (n, classes)) for a conditional VAE. Batches are the
        # VAE's named inputs, {"images"} and then {"labels"} (``models.VAE.model_inputs``).
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.binarize = binarize  # redraw Bernoulli pixels per (seed, epoch, batch): dynamic binarisation
        if binarize and not shuffle:
            raise ValueError("dynamic binarisation draws per epoch: use it with shuffle=True")
        self.restart(0)

    def restart(self, epoch):
        """Make the next pass (the next request for batch 0) epoch ``epoch``."""
        self.next_epoch = epoch
        self.epoch = None
        self.order = None

    def permutation(self, epoch):
        """The order of the images in ``epoch``."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.images))

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        lo, hi = index * self.batch_size, (index + 1) * self.batch_size
        if not self.shuffle:
            return self._with_labels(self.images[lo:hi], slice(lo, hi))
        if index == 0 or self.order is None:
            self.epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
            self.order = self.permutation(self.epoch)
        picked = np.sort(self.order[lo:hi])  # sorted indices: faster gather
        batch = self.images[picked]
        if self.binarize:
            batch = binarize_once(batch, seed=[self.seed, self.epoch, index, 1])
        return self._with_labels(batch, picked)

    def _with_labels(self, batch, picked):
        if self.shard is not None:
            index, count = self.shard
            n = len(batch)
            if n % count:
                raise ValueError(f"a batch of {n} images does not split over {count} processes")
            part = slice(index * n // count, (index + 1) * n // count)
            batch, picked = batch[part], np.arange(len(self.images))[picked][part]
        return {"images": batch} if self.labels is None else {"images": batch, "labels": self.labels[picked]}


def one_hot(labels, num_classes):
    """Integer labels (n,) -> float32 one-hot rows (n, num_classes)."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, np.int64)]


def keras_input(batches):
    """``batches`` (an ``ImageBatches``) as ``fit``, ``evaluate`` and ``predict`` should get them on this backend.

    On TensorFlow, Keras turns a PyDataset into a tf.data pipeline with tf.data's autotuner on,
    and opens a new iterator every epoch (and every validation pass). Deleting an iterator waits
    for the autotuner's thread, which sleeps in periods that double from 10 ms, and is not always
    woken: measured on a 2-core CPU, a third to a half of the epochs of 8,192
    images ended with both cores idle for up to 2.6 s, the epoch finishing when the autotuner's
    period ran out (2.56 s or 5.12 s after it began, whatever the model). So on TensorFlow this is
    the same batches, in the same order, from a pipeline with the autotuner off (it has nothing
    to tune: one Python generator and a one-batch prefetch). Other backends iterate the PyDataset
    in Python and get it unchanged.
    """
    if keras.backend.backend() != "tensorflow" or len(batches) == 0:
        return batches  # (an empty one: Keras' own error names the problem)
    import tensorflow as tf

    def spec(array):
        return tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype))

    signature = {"images": spec(batches.images)}
    if batches.labels is not None:
        signature["labels"] = spec(batches.labels)
    # A request for batch 0 starts the next epoch (see ImageBatches): every iterator opens with it.
    pipeline = tf.data.Dataset.from_generator(lambda: (batches[i] for i in range(len(batches))),
                                              output_signature=signature)
    options = tf.data.Options()
    options.autotune.enabled = False
    # Known length: Keras counts the steps of an epoch (and the progress bar its total) from it.
    pipeline = pipeline.apply(tf.data.experimental.assert_cardinality(len(batches)))
    return pipeline.with_options(options).prefetch(1)
