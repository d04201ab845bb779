"""Atomic writes: a temporary file beside the target, renamed over it, so no reader sees a partial file.

The temporary files' names follow ``TEMPORARY``, which a run folder's lock holder recognises as a
killed process's orphans (``rundir.RunDir.temporaries``).
"""

import json
import os
import re
import tempfile
from pathlib import Path

# Temporary files: ".<final name>.<8 random characters>.tmp<suffix>" (see temporary_beside).
TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*")


def temporary_beside(path, suffix=""):
    """Create an empty ``.<name>.<random>.tmp<suffix>`` file beside ``path``; returns its path.

    Its name matches ``TEMPORARY``: what ``RunDir.temporaries`` recognises as an orphan after a kill.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; the renamed file gets the usual mode
    finally:
        os.close(fd)
    return tmp


def _umask():
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def replace_atomically(write, path, suffix=""):
    """Call ``write(tmp_path)`` then rename over ``path``, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path, suffix or "".join(path.suffixes))
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    """Atomically replace ``path`` with ``text``."""
    replace_atomically(lambda tmp: Path(tmp).write_text(text), path)


def write_json_atomic(path, obj):
    """Atomically replace ``path`` with pretty JSON."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_model_atomic(model, path):
    """``model.save`` to a temporary ``.keras`` beside ``path``, then rename over it."""
    replace_atomically(lambda tmp: model.save(tmp), path, suffix=".keras")
