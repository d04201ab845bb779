"""Locating a dataset's files (a folder the user named, the package, system copies, the cache) and downloading them, verified."""

import importlib.resources
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mnist_vae.data.files import DataError, find_file, why_missing
from mnist_vae.data.registry import READERS

ENV_DATA_DIR = "MNIST_VAE_DATA"


def default_cache_dir():
    """Per-user download cache: $XDG_CACHE_HOME/mnist-vae or ~/.cache/mnist-vae."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnist-vae"


def has_all(folder, spec):
    return all(find_file(folder, f) for f in spec.file_names())


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
        problems = [why_missing(folder, name) for name in spec.file_names() if not find_file(folder, name)]
        if problems:
            raise DataError(f"{how} does not hold the {spec.name} dataset: {'; '.join(problems)}; put "
                            f"{READERS[spec.reader].files} there or name another folder")
        return folder
    dirs = default_dirs(spec, cache_dir)
    for folder in dirs:
        if has_all(folder, spec):
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
            if find_file(target, name):
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
            copy_at_most(response, out, None if max_bytes is None else max_bytes + _GZIP_SLACK, url)
        READERS[spec.reader].verify(tmp, spec, name)  # raises DataError on a corrupt or wrong file
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_GZIP_SLACK = 1 << 20  # gzip never grows data by more than a few bytes per 16 kB block


def copy_at_most(source, target, limit, url):
    copied = 0
    while chunk := source.read(1 << 16):
        copied += len(chunk)
        if limit is not None and copied > limit:
            raise DataError(f"{url}: more than {limit:,} bytes, larger than the file can be")
        target.write(chunk)
