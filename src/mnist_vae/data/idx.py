"""The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/): parsing, reading, one dataset's splits."""

import hashlib
import math
import struct

import numpy as np

from mnist_vae.data.files import ChecksumMismatch, DataError, check_labels, find_file, read_bytes

# IDX type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}



def parse_idx(content, name="<bytes>", ndim=None):
    """Parse IDX bytes into a numpy array, checking magic number, dimensions and length."""
    if len(content) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(content)} bytes)")
    zero, code, dims = struct.unpack(">HBB", content[:4])
    if zero != 0 or code not in IDX_DTYPES:
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
    dtype = IDX_DTYPES[code]
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

    ``max_bytes`` bounds the decompressed size (see ``read_bytes``).
    """
    content = read_bytes(path, max_bytes)
    if sha256 is not None:
        digest = hashlib.sha256(content).hexdigest()
        if digest != sha256:
            raise ChecksumMismatch(path, digest, sha256)
    return parse_idx(content, name=str(path), ndim=ndim)


def load_raw(spec, split, folder):
    """uint8 images (n, side, side) and labels (n,) of one split of an IDX dataset, checksums verified."""
    image_file, label_file = spec.files[split]
    images, labels = (read_idx(find_file(folder, name), ndim=ndim, sha256=spec.sha256.get(name),
                               max_bytes=spec.sizes.get(name))
                      for name, ndim in ((image_file, 3), (label_file, 1)))
    side = spec.geometry.image_shape[:2]  # IDX images are single-channel (n, side, side)
    if images.shape[1:] != side or images.dtype != np.uint8:
        raise DataError(f"{folder}/{image_file}: expected uint8 {side[0]}x{side[1]} images, "
                        f"found {images.dtype} {images.shape[1:]}")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    check_labels(spec, labels, f"{folder}/{label_file}")
    return images, labels



def read_idx_dataset(spec, folder):
    return load_raw(spec, "train", folder), load_raw(spec, "test", folder)


def verify_idx(path, spec, name):
    read_idx(path, sha256=spec.sha256.get(name), max_bytes=spec.sizes.get(name))
