"""Datasets: file formats, the registry, locating and fetching, and the pipeline to ``fit``.

This is the only package that knows file formats and locations. Everything downstream sees
float32 images in [0, 1], laid out as the dataset's ``observation.Geometry`` says (MNIST:
(n, 32, 32, 1)), and uint8 labels.

- ``files``: bounded reads, finding a file, the checks every format makes;
- ``idx``, ``cifar``, ``colour``: the formats (and colour MNIST, built from MNIST's files);
- ``registry``: ``DATASETS`` and ``READERS`` by name, and checksum messages that name a file's dataset;
- ``sources``: where a dataset's files are looked for, and downloading them;
- ``pipeline``: splits, ``--binarize``, ``ImageBatches`` and the backend's input pipeline.
"""

from mnist_vae.data.cifar import CIFAR_ARCHIVE
from mnist_vae.data.colour import COLOUR_SEED, colourise
from mnist_vae.data.sources import ENV_DATA_DIR, default_cache_dir, default_dirs, fetch, has_all, locate, named_dir
from mnist_vae.data.files import ChecksumMismatch, DataError, find_file
from mnist_vae.data.idx import parse_idx, read_idx_dataset
from mnist_vae.data.pipeline import (BINARIZE, HELD_OUT_BINARIZE_SEED, ImageBatches, Split, Splits, binarize_once,
                                     held_out_images, keras_input, load_splits, one_hot)
from mnist_vae.data.registry import (DATASETS, READERS, DatasetSpec, Reader, checksum_mismatch, get_spec, load_raw,
                                     read_idx)

__all__ = ["BINARIZE", "CIFAR_ARCHIVE", "COLOUR_SEED", "ChecksumMismatch", "DATASETS", "DataError", "DatasetSpec",
           "ENV_DATA_DIR", "HELD_OUT_BINARIZE_SEED", "ImageBatches", "READERS", "Reader", "Split", "Splits",
           "binarize_once", "checksum_mismatch", "colourise", "default_cache_dir", "default_dirs", "fetch",
           "find_file", "get_spec", "has_all", "held_out_images", "keras_input", "load_raw", "load_splits",
           "locate", "named_dir", "one_hot", "parse_idx", "read_idx", "read_idx_dataset"]
