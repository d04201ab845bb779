"""CIFAR-10, python version: one tar.gz of pickled batches (https://www.cs.toronto.edu/~kriz/cifar.html)."""

import gzip
import io
import pickle
import tarfile
import zlib

import numpy as np

from mnist_vae.data.files import DataError, check_labels, find_file, verify_archive

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_TRAIN = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("cifar-10-batches-py/test_batch",)
_CIFAR_MEMBER_BYTES = 32_000_000  # a batch of 10,000 images is 30.7 MB pickled; refuse anything larger


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


def read_cifar_dataset(spec, folder):
    """(train, test) of the python-version archive in ``folder``, checksum verified first."""
    archive = find_file(folder, CIFAR_ARCHIVE)
    verify_archive(archive, spec, CIFAR_ARCHIVE)
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
        check_labels(spec, labels, str(archive))
        result.append((images, labels))
    return tuple(result)
