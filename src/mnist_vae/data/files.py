"""What every dataset format needs: reading a bounded (possibly gzipped) file, finding it, checking it.

Nothing here knows the registry: a wrong checksum is a ``ChecksumMismatch``, which ``data.registry``
explains (naming the dataset the file belongs to, if any)."""

import gzip
import hashlib
import os
import zlib
from pathlib import Path

from mnist_vae.errors import UserError

class DataError(UserError):
    """A dataset file is missing, unreadable, corrupt or not what it should be."""


class ChecksumMismatch(DataError):
    """A file whose SHA-256 is not the one expected; ``data.registry.explaining`` says whose file it is."""

    def __init__(self, path, digest, expected):
        super().__init__(f"{path}: checksum mismatch (SHA-256 {digest[:12]}..., expected {expected[:12]}...); the "
                         "file is damaged: delete it and fetch it again")
        self.path, self.digest, self.expected = path, digest, expected


def read_bytes(path, max_bytes=None):
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



def find_file(folder, name):
    """``folder/name.gz`` or ``folder/name``, whichever is a regular file, else None."""
    for candidate in (Path(folder) / f"{name}.gz", Path(folder) / name):
        if candidate.is_file():
            return candidate
    return None


def why_missing(folder, name):
    """Why ``find_file(folder, name)`` found nothing, in a few words."""
    for candidate in (Path(folder) / f"{name}.gz", Path(folder) / name):
        if candidate.is_symlink() and not candidate.exists():
            return f"{candidate.name} is a broken or looping symlink"
        if candidate.exists():
            return f"{candidate.name} is {'a folder' if candidate.is_dir() else 'not a regular file'}"
    return f"{name}(.gz) is missing"



def check_labels(spec, labels, where):
    if len(labels) and int(labels.max()) >= len(spec.class_names):
        raise DataError(f"{where}: label {int(labels.max())} outside 0..{len(spec.class_names) - 1}")


def verify_archive(path, spec, name):
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
            raise ChecksumMismatch(path, digest.hexdigest(), expected)
