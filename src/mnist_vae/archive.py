"""Loading a ``.keras`` file safely: bounds on the archive, checked before Keras reads it, and Keras' safe mode.

A ``.keras`` file is a zip archive that Keras inflates entry by entry: a 3 MB file can declare a
3 GB ``config.json``, and Keras would inflate all of it before failing. The central directory
declares every entry's name and uncompressed size, and Python's zip reader stops at the declared
size, so checking the declarations bounds what loading can take.
"""

import zipfile
from pathlib import Path

import keras

from mnist_vae.errors import UserError

# The entries Keras writes in a .keras file (keras.saving's file names); a model of ours has no assets.
JSON_ENTRIES = ("metadata.json", "config.json")
WEIGHT_ENTRIES = ("model.weights.h5", "model.weights.npz")
# The largest model the config allows (resnet_ar, 1,024 latents, 32 pixel layers, 10 classes)
# saves a 100 KB config.json and 158 MB of weights with Adam's slots: the limits leave about 40x
# and 3x headroom (tests/test_hostile_inputs.py builds that model and checks it fits).
MAX_JSON_BYTES = 4 << 20
MAX_WEIGHT_BYTES = 512 << 20
MAX_ENTRIES = 16


def check_model_archive(path):
    """Raise ``UserError`` in one line unless ``path`` is a zip archive a model of this package could be.

    Checks the number of entries, their names and each declared uncompressed size, reading only
    the central directory.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            entries = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a Keras model file ({_first_line(e)}); re-train or re-copy it") from None
    if len(entries) > MAX_ENTRIES:
        raise UserError(f"{path}: {len(entries):,} entries in the archive, and a Keras model file has at most "
                        f"{MAX_ENTRIES}; not a model of this package, so it is not loaded")
    names = [entry.filename for entry in entries]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: the archive names an entry twice; not a model file this package wrote, so it is "
                        "not loaded")
    for entry in entries:
        limit = (MAX_JSON_BYTES if entry.filename in JSON_ENTRIES
                 else MAX_WEIGHT_BYTES if entry.filename in WEIGHT_ENTRIES else None)
        if limit is None:
            raise UserError(f"{path}: holds {_clip(entry.filename)!r}, which no Keras model file of this package "
                            "has; it is not loaded")
        if entry.file_size > limit:
            raise UserError(f"{path}: {entry.filename} inflates to {entry.file_size:,} bytes, past the "
                            f"{limit:,} any model of this package needs; it is not loaded")
    if "config.json" not in names:
        raise UserError(f"{path}: the archive has no config.json, so it is not a Keras model file; re-train or "
                        "re-copy it")


def _first_line(e):
    text = str(e).strip()
    return _clip(text.splitlines()[0]) if text else type(e).__name__


def _clip(text, limit=80):
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_model(path, compile=True):
    """Load a ``.keras`` file written by this package, with a clear error for anything else.

    Every command that opens a model comes here: the archive's bounds are checked first
    (``archive.check_model_archive``), and Keras' safe mode refuses files that hold code.
    """
    import mnist_vae  # noqa: F401  registers the custom classes

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; train one with `vae train --out DIR`")
    check_model_archive(path)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:  # Keras raises many types for a damaged archive
        text = str(e).strip()
        if "safe_mode" in text:  # Keras' refusal of a Lambda layer or other Python code
            raise UserError(f"{path}: holds Python code (a Lambda layer or a function), which is never loaded from a "
                            "file; use a model file that `vae train` wrote") from None
        first_line = text.splitlines()[0][:200] if text else type(e).__name__
        raise UserError(f"{path}: cannot load this Keras model ({first_line}); re-train or re-copy it") from None
