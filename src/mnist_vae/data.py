"""Datasets: IDX files, where to find them, checksums, splits and batches.

This is the only module that knows file formats and locations. Everything downstream sees
float32 images in [0, 1], laid out as the dataset's ``observation.Geometry`` says (MNIST:
(n, 32, 32, 1)), and uint8 labels.
"""

import dataclasses
import gzip
import hashlib
import importlib.resources
import io
import math
import os
import shutil
import pickle
import struct
import tarfile
import tempfile
import typing
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import keras
import numpy as np

from mnist_vae.errors import UserError
from mnist_vae.observation import COLOUR_32, GREY_28, Geometry

ENV_DATA_DIR = "MNIST_VAE_DATA"
# --binarize choices. "dynamic" (Burda et al., 2015): training pixels are redrawn as Bernoulli
# samples of the grey levels every epoch; held-out splits are binarised once with this seed, so
# every evaluation of every model sees the same binary test set.
BINARIZE = ("none", "dynamic")
HELD_OUT_BINARIZE_SEED = 20151231

# IDX type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(UserError):
    """A dataset file is missing, unreadable, corrupt or not what it should be."""


def _read_bytes(path, max_bytes=None):
    """Whole file content, gunzipped when it starts with the gzip magic number.

    With ``max_bytes``, content (raw, or after decompression) longer than that is refused as soon
    as the limit is passed, so a small file that inflates to gigabytes never fills memory.
    """
    path = Path(path)
    limit = -1 if max_bytes is None else max_bytes + 1  # one byte more shows the content is too long
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                f.seek(0)
                try:
                    content = gzip.GzipFile(fileobj=f).read(limit)
                except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                    raise DataError(
                        f"{path}: corrupt or truncated gzip data ({e}); delete it and fetch it again"
                    ) from None
            else:
                f.seek(0)
                content = f.read(limit)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if max_bytes is not None and len(content) > max_bytes:
        raise DataError(f"{path}: holds more than the {max_bytes:,} bytes this file has; it is a different file or "
                        "damaged: delete it and fetch it again")
    return content


def parse_idx(content, name="<bytes>", ndim=None):
    """Parse IDX bytes into a numpy array, checking magic number, dimensions and length."""
    if len(content) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(content)} bytes)")
    zero, code, dims = struct.unpack(">HBB", content[:4])
    if zero != 0 or code not in _IDX_DTYPES:
        raise DataError(
            f"{name}: not an IDX file (magic number 0x{content[:4].hex()}); "
            "expected an MNIST-format file such as train-images-idx3-ubyte"
        )
    if dims == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    if ndim is not None and dims != ndim:
        raise DataError(f"{name}: expected {ndim} dimensions, the IDX header declares {dims}")
    header = 4 + 4 * dims
    if len(content) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{dims}I", content[4:header])
    dtype = _IDX_DTYPES[code]
    # NumPy refuses a shape whose non-zero sides alone exceed its index range, even with no data.
    if math.prod(max(side, 1) for side in shape) * dtype.itemsize > np.iinfo(np.intp).max:
        raise DataError(f"{name}: IDX header shape {shape} is larger than any array; not an MNIST-format file")
    expected = math.prod(shape) * dtype.itemsize
    actual = len(content) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{name}: {what}: header shape {shape} needs {expected} data bytes, found {actual}; "
            "delete it and fetch it again"
        )
    array = np.frombuffer(content, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path, ndim=None, sha256=None, max_bytes=None):
    """Read a (possibly gzipped) IDX file; optionally verify the SHA-256 of its decompressed content.

    ``max_bytes`` bounds the decompressed size (see ``_read_bytes``).
    """
    content = _read_bytes(path, max_bytes)
    if sha256 is not None:
        digest = hashlib.sha256(content).hexdigest()
        if digest != sha256:
            raise DataError(checksum_mismatch(path, digest, sha256))
    return parse_idx(content, name=str(path), ndim=ndim)


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


# name -> spec; a new dataset is one entry here (and a new file format one entry in READERS).
DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        files=_IDX_FILES,
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        sizes=_idx_sizes(60_000, 10_000),
        class_names=tuple(str(d) for d in range(10)),
        packaged="datasets/mnist",
        install_hint="reinstall mnist-vae, which ships MNIST",
        urls=("https://storage.googleapis.com/cvdf-datasets/mnist/",),
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        files=_IDX_FILES,
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        sizes=_idx_sizes(60_000, 10_000),
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


def default_cache_dir():
    """Per-user download cache: $XDG_CACHE_HOME/mnist-vae or ~/.cache/mnist-vae."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnist-vae"


def _find_file(folder, name):
    """``folder/name.gz`` or ``folder/name``, whichever is a regular file, else None."""
    for candidate in (Path(folder) / f"{name}.gz", Path(folder) / name):
        if candidate.is_file():
            return candidate
    return None


def _why_missing(folder, name):
    """Why ``_find_file(folder, name)`` found nothing, in a few words."""
    for candidate in (Path(folder) / f"{name}.gz", Path(folder) / name):
        if candidate.is_symlink() and not candidate.exists():
            return f"{candidate.name} is a broken or looping symlink"
        if candidate.exists():
            return f"{candidate.name} is {'a folder' if candidate.is_dir() else 'not a regular file'}"
    return f"{name}(.gz) is missing"


def _has_all(folder, spec):
    return all(_find_file(folder, f) for f in spec.file_names())


def named_dir(data_dir=None):
    """The folder the user named, --data-dir first, else $MNIST_VAE_DATA: (folder, how it was named) or None."""
    if data_dir:
        return Path(data_dir), f"--data-dir {data_dir}"
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]), f"{ENV_DATA_DIR}={os.environ[ENV_DATA_DIR]}"
    return None


def default_dirs(spec, cache_dir=None):
    """Folders searched when the user named none, in order (the download cache last)."""
    dirs = []
    if spec.packaged:
        dirs.append(Path(str(importlib.resources.files("mnist_vae").joinpath(spec.packaged))))
    dirs.extend(Path(d) for d in spec.system_dirs)
    dirs.append(Path(cache_dir) if cache_dir else default_cache_dir() / spec.name)
    return dirs


def locate(spec, data_dir=None, cache_dir=None, download=True, timeout=60):
    """The folder holding all four files of ``spec``.

    A folder the user named (``data_dir``, else ``$MNIST_VAE_DATA``) is the only one looked at:
    if it lacks a file, that is an error naming it, never a silent switch to another copy.
    Otherwise the default folders are searched and, if allowed, the files downloaded.
    """
    named = named_dir(data_dir)
    if named:
        folder, how = named
        if not folder.is_dir():
            what = "not a folder" if folder.exists() else "no such folder"
            raise DataError(f"{how}: {what}; name the folder that holds {READERS[spec.reader].files} of {spec.name}")
        problems = [_why_missing(folder, name) for name in spec.file_names() if not _find_file(folder, name)]
        if problems:
            raise DataError(f"{how} does not hold the {spec.name} dataset: {'; '.join(problems)}; put "
                            f"{READERS[spec.reader].files} there or name another folder")
        return folder
    dirs = default_dirs(spec, cache_dir)
    for folder in dirs:
        if _has_all(folder, spec):
            return folder
    target = dirs[-1]
    if download and spec.urls:
        return fetch(spec, target, spec.urls, timeout=timeout)
    raise DataError(_missing_message(spec, dirs))


def _missing_message(spec, dirs, reason=""):
    looked = ", ".join(str(d) for d in dirs)
    hint = f"; or {spec.install_hint}" if spec.install_hint else ""
    return (
        f"{spec.name} not found{reason} (looked in {looked}): put {READERS[spec.reader].files} in a folder and "
        f"pass --data-dir or set {ENV_DATA_DIR}{hint}"
    )


def fetch(spec, target, urls, timeout=60):
    """Download the files of ``spec`` into ``target``, verifying checksums; returns ``target``."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for pair in spec.files.values():
        for name in pair:
            if _find_file(target, name):
                continue
            errors = []
            for base in urls:
                url = base.rstrip("/") + f"/{name}{spec.download_suffix}"
                try:
                    _download_verified(url, target / f"{name}{spec.download_suffix}", spec, name, timeout)
                    break
                except (urllib.error.URLError, OSError, DataError) as e:
                    errors.append(f"{url}: {getattr(e, 'reason', e)}")
            else:
                raise DataError(
                    _missing_message(spec, [target], reason=f" and download failed ({'; '.join(errors)})")
                )
    return target


def _download_verified(url, dest, spec, name, timeout):
    """Stream ``url`` to a temporary file beside ``dest``, check it as ``spec``'s reader does, then rename into place.

    A response longer than the file can be (``spec.sizes``, plus gzip's slack) is cut off, so a
    wrong or hostile server cannot fill the disk.
    """
    max_bytes = spec.sizes.get(name)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            _copy_at_most(response, out, None if max_bytes is None else max_bytes + _GZIP_SLACK, url)
        READERS[spec.reader].verify(tmp, spec, name)  # raises DataError on a corrupt or wrong file
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_GZIP_SLACK = 1 << 20  # gzip never grows data by more than a few bytes per 16 kB block


def _copy_at_most(source, target, limit, url):
    copied = 0
    while chunk := source.read(1 << 16):
        copied += len(chunk)
        if limit is not None and copied > limit:
            raise DataError(f"{url}: more than {limit:,} bytes, larger than the file can be")
        target.write(chunk)


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


def load_raw(spec, split, folder):
    """uint8 images (n, side, side) and labels (n,) of one split of an IDX dataset, checksums verified."""
    image_file, label_file = spec.files[split]
    images, labels = (read_idx(_find_file(folder, name), ndim=ndim, sha256=spec.sha256.get(name),
                               max_bytes=spec.sizes.get(name))
                      for name, ndim in ((image_file, 3), (label_file, 1)))
    side = spec.geometry.image_shape[:2]  # IDX images are single-channel (n, side, side)
    if images.shape[1:] != side or images.dtype != np.uint8:
        raise DataError(f"{folder}/{image_file}: expected uint8 {side[0]}x{side[1]} images, "
                        f"found {images.dtype} {images.shape[1:]}")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    _check_labels(spec, labels, f"{folder}/{label_file}")
    return images, labels


def _check_labels(spec, labels, where):
    if len(labels) and int(labels.max()) >= len(spec.class_names):
        raise DataError(f"{where}: label {int(labels.max())} outside 0..{len(spec.class_names) - 1}")


def _read_idx_dataset(spec, folder):
    return load_raw(spec, "train", folder), load_raw(spec, "test", folder)


def _verify_idx(path, spec, name):
    read_idx(path, sha256=spec.sha256.get(name), max_bytes=spec.sizes.get(name))


# --- CIFAR-10, python version: one tar.gz of pickled batches (https://www.cs.toronto.edu/~kriz/cifar.html) ---

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_TRAIN = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("cifar-10-batches-py/test_batch",)
_CIFAR_MEMBER_BYTES = 32_000_000  # a batch of 10,000 images is 30.7 MB pickled; refuse anything larger


def _verify_archive(path, spec, name):
    """Size and SHA-256 of a whole archive file (an archive is checked as it is, not decompressed)."""
    expected_size, expected = spec.sizes.get(name), spec.sha256.get(name)
    size = os.path.getsize(path)
    if expected_size is not None and size != expected_size:
        raise DataError(f"{path}: {size:,} bytes, but {name} has {expected_size:,}; it is a different file or "
                        "damaged: delete it and fetch it again")
    if expected is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise DataError(checksum_mismatch(path, digest.hexdigest(), expected))


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dicts, lists, bytes, NumPy arrays): never arbitrary code."""

    # NumPy's array reconstruction, and _codecs.encode, which Python 3's protocol-2 pickles use
    # to spell bytes (the official archive was written by Python 2; both must read).
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays")
        return super().find_class(module, name)


def _read_batch(archive, tar, member_name):
    try:
        member = tar.getmember(member_name)
    except KeyError:
        raise DataError(f"{archive}: no {member_name} inside; not the CIFAR-10 python-version archive") from None
    if not member.isfile() or member.size > _CIFAR_MEMBER_BYTES:
        raise DataError(f"{archive}: {member_name} is not a CIFAR batch (a file of at most "
                        f"{_CIFAR_MEMBER_BYTES:,} bytes)")
    try:
        batch = _BatchUnpickler(io.BytesIO(tar.extractfile(member).read(_CIFAR_MEMBER_BYTES + 1)),
                                encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> HWC
        labels = np.asarray(labels, dtype=np.int64)
    except DataError:
        raise
    except Exception as e:  # a damaged or foreign pickle raises many types
        raise DataError(f"{archive}: {member_name} is not a readable CIFAR batch ({type(e).__name__}: "
                        f"{str(e)[:80]}); delete the archive and fetch it again") from None
    if len(images) != len(labels) or np.asarray(data).size != len(labels) * 3072:
        raise DataError(f"{archive}: {member_name} holds {len(labels)} labels for {np.asarray(data).size} bytes "
                        "of images (3,072 per image)")
    return images, labels


def _read_cifar_dataset(spec, folder):
    """(train, test) of the python-version archive in ``folder``, checksum verified first."""
    archive = _find_file(folder, CIFAR_ARCHIVE)
    _verify_archive(archive, spec, CIFAR_ARCHIVE)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            splits = [[_read_batch(archive, tar, m) for m in members] for members in (_CIFAR_TRAIN, _CIFAR_TEST)]
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{archive}: not a readable tar.gz archive ({e}); delete it and fetch it again") from None
    result = []
    for batches in splits:
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        if labels.min(initial=0) < 0:
            raise DataError(f"{archive}: negative class label {int(labels.min())}")
        labels = labels.astype(np.uint8)
        _check_labels(spec, labels, str(archive))
        result.append((images, labels))
    return tuple(result)


# --- Colour MNIST: built from MNIST, deterministically (the colour path's dataset on machines without CIFAR) ---

COLOUR_SEED = 20261125


def colourise(images, split):
    """uint8 grey digits (n, 28, 28) -> uint8 colour images (n, 32, 32, 3), a fixed function of (split, image index).

    Each image gets a background colour ``bg`` (uniform over 0..255 per channel) and a digit
    colour ``fg = (bg + 128 + d) mod 256`` per channel with ``d`` uniform over -64..63, so every
    channel of the digit differs from the background by at least 64 levels. Both come from
    ``numpy.random.default_rng([COLOUR_SEED, s])`` with s = 0 for train, 1 for test, drawn
    as one (n, 2, 3) array of integers (background, then offset). The digit is padded by 2
    background pixels to 32x32 and blended in integers: pixel = bg + (fg - bg) * grey / 255,
    rounded half up.
    """
    rng = np.random.default_rng([COLOUR_SEED, {"train": 0, "test": 1}[split]])
    draws = rng.integers(0, 256, size=(len(images), 2, 3))
    bg = draws[:, 0]
    fg = (bg + 128 + draws[:, 1] % 128 - 64) % 256
    # Each image's 256 grey levels -> colours, as a table (n, 256, 3); then one gather per pixel.
    levels = np.arange(256)[None, :, None]
    table = (bg[:, None, :] + np.floor_divide(2 * (fg - bg)[:, None, :] * levels + 255, 510)).astype(np.uint8)
    grey = np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(images), -1)  # (n, 1024)
    rows = (np.arange(len(images), dtype=np.int64) * 256)[:, None] + grey  # row of each pixel in the flat table
    return np.take(table.reshape(-1, 3), rows.ravel(), axis=0).reshape(len(images), 32, 32, 3)


def _read_colour_mnist(spec, folder):
    return tuple((colourise(images, split), labels)
                 for split, (images, labels) in zip(("train", "test"), _read_idx_dataset(DATASETS["mnist"], folder)))


@dataclasses.dataclass(frozen=True)
class Reader:
    """How a dataset format turns located files into ((train images, labels), (test images, labels)), and checks a download."""

    read: typing.Callable
    verify: typing.Callable
    files: str  # what a folder must hold, for error messages


# format name -> reader; DatasetSpec.reader picks one.
READERS = {
    "idx": Reader(_read_idx_dataset, _verify_idx, "the four IDX files"),
    "cifar_python": Reader(_read_cifar_dataset, _verify_archive, CIFAR_ARCHIVE),
    "colour_mnist": Reader(_read_colour_mnist, _verify_idx, "the four MNIST IDX files"),
}


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
        # Per-image conditioning (one-hot labels, (n, classes)) for a conditional VAE: batches are
        # then {"images", "labels"}, the inputs ``models.VAE.model_inputs`` describes.
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
        return batch if self.labels is None else {"images": batch, "labels": self.labels[picked]}


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

    signature = spec(batches.images)
    if batches.labels is not None:
        signature = {"images": signature, "labels": spec(batches.labels)}
    # A request for batch 0 starts the next epoch (see ImageBatches): every iterator opens with it.
    pipeline = tf.data.Dataset.from_generator(lambda: (batches[i] for i in range(len(batches))),
                                              output_signature=signature)
    options = tf.data.Options()
    options.autotune.enabled = False
    # Known length: Keras counts the steps of an epoch (and the progress bar its total) from it.
    pipeline = pipeline.apply(tf.data.experimental.assert_cardinality(len(batches)))
    return pipeline.with_options(options).prefetch(1)
