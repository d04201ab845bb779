"""Datasets by name: where each one's files live, their checksums and sizes, and the reader of their format.

Adding a dataset is one ``DATASETS`` entry; a new file format is one ``READERS`` entry (its reader in
a module of its own)."""

import dataclasses
import functools
import typing

from mnist_vae.data import cifar, colour, idx
from mnist_vae.data.files import ChecksumMismatch, DataError, verify_archive
from mnist_vae.errors import UserError
from mnist_vae.observation import COLOUR_32, GREY_28, Geometry

@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's four IDX files live and how to check them."""

    name: str
    files: dict  # split -> (images file, labels file), names without ".gz"
    sha256: dict  # file name -> SHA-256 of the decompressed content
    sizes: dict  # file name -> bytes of the decompressed content: reading stops past it
    class_names: tuple
    packaged: str | None = None  # folder inside the package holding the files
    system_dirs: tuple = ()  # read-only system copies (Debian packages)
    install_hint: str = ""
    urls: tuple = ()  # base URLs to download "<file>.gz" from, tried in order
    geometry: Geometry = GREY_28  # image side, channels and the models' padding (observation.Geometry)
    reader: str = "idx"  # READERS key: how the located files become uint8 images and labels
    download_suffix: str = ".gz"  # a file is downloaded as URL + name + this (IDX files are served gzipped)

    def file_names(self):
        """The four IDX file names (without ".gz")."""
        return [name for pair in self.files.values() for name in pair]


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_sizes(n_train, n_test):
    """Decompressed sizes of the four files: magic number, 4 bytes per dimension, uint8 data."""
    return {
        "train-images-idx3-ubyte": 16 + n_train * GREY_28.scored_dims,
        "train-labels-idx1-ubyte": 8 + n_train,
        "t10k-images-idx3-ubyte": 16 + n_test * GREY_28.scored_dims,
        "t10k-labels-idx1-ubyte": 8 + n_test,
    }


def _mnist_like(name, sha256, **where):
    """A dataset in MNIST's four IDX files of 60,000 training and 10,000 test 28x28 images; ``sha256``
    of the decompressed files in ``_IDX_FILES``' order (train images, labels, test images, labels)."""
    names = [file for pair in _IDX_FILES.values() for file in pair]
    return DatasetSpec(name=name, files=_IDX_FILES, sha256=dict(zip(names, sha256)), sizes=_idx_sizes(60_000, 10_000),
                       **where)


# name -> spec; a new dataset is one entry here.
DATASETS = {
    "mnist": _mnist_like(
        "mnist",
        ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
         "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
         "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
         "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        class_names=tuple(str(d) for d in range(10)),
        packaged="datasets/mnist",
        install_hint="reinstall mnist-vae, which ships MNIST",
        urls=("https://storage.googleapis.com/cvdf-datasets/mnist/",),
    ),
    "fashion_mnist": _mnist_like(
        "fashion_mnist",
        ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
         "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
         "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
         "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        install_hint="apt-get install dataset-fashion-mnist",
        # The mirror Keras' own loader uses, then the dataset's repository.
        urls=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
              "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    ),
    # The python-version archive: 50,000 training and 10,000 test 32x32 RGB images in 10 classes.
    "cifar10": DatasetSpec(
        name="cifar10",
        files={"archive": ("cifar-10-python.tar.gz",)},
        sha256={"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
        sizes={"cifar-10-python.tar.gz": 170_498_071},  # the archive itself (checked as a whole)
        class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        install_hint="download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into that folder",
        urls=("https://www.cs.toronto.edu/~kriz/",),
        geometry=COLOUR_32,
        reader="cifar_python",
        download_suffix="",
    ),
}
# MNIST digits and backgrounds in seeded colours, 32x32x3 (data.colourise): built from the MNIST
# files, found and checked exactly as MNIST's are.
DATASETS["colour_mnist"] = dataclasses.replace(DATASETS["mnist"], name="colour_mnist", geometry=COLOUR_32,
                                               reader="colour_mnist")


def get_spec(name):
    """The registered dataset called ``name``, or a clear error listing the choices."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def checksum_mismatch(path, digest, expected):
    """The message for a file whose SHA-256 is not the expected one: a known file of another
    dataset is named, with the flag that reads it; anything else is damaged."""
    known = {}
    for spec in DATASETS.values():
        for name, value in spec.sha256.items():
            if value == digest:
                known.setdefault(name, []).append(spec.name)
    found = f"(SHA-256 {digest[:12]}..., expected {expected[:12]}...)"
    if not known:
        return f"{path}: checksum mismatch {found}; the file is damaged: delete it and fetch it again"
    name, datasets = next(iter(known.items()))
    flags = " or ".join(f"--dataset {d}" for d in datasets)
    return (f"{path}: this is {datasets[0]}'s {name} {found}, not the file expected here; pass {flags} to train "
            "on it, or point --data-dir at a folder holding the expected files")


def explaining(read):
    """``read``, whose checksum mismatches name the registered dataset the file belongs to (``checksum_mismatch``)."""

    @functools.wraps(read)
    def explained(*args, **kwargs):
        try:
            return read(*args, **kwargs)
        except ChecksumMismatch as e:
            raise DataError(checksum_mismatch(e.path, e.digest, e.expected)) from None

    return explained


read_idx = explaining(idx.read_idx)
load_raw = explaining(idx.load_raw)


@dataclasses.dataclass(frozen=True)
class Reader:
    """How a dataset format turns located files into ((train images, labels), (test images, labels)), and checks a download."""

    read: typing.Callable
    verify: typing.Callable
    files: str  # what a folder must hold, for error messages


# format name -> reader; DatasetSpec.reader picks one.
READERS = {
    "idx": Reader(explaining(idx.read_idx_dataset), explaining(idx.verify_idx), "the four IDX files"),
    "cifar_python": Reader(explaining(cifar.read_cifar_dataset), explaining(verify_archive), cifar.CIFAR_ARCHIVE),
    "colour_mnist": Reader(explaining(colour.read_colour_mnist), explaining(idx.verify_idx),
                           "the four MNIST IDX files"),
}
