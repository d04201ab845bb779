"""Replacing a run (``--overwrite``) all or nothing: its files, by name, set aside, then discarded.

Only files at the names a run writes (``rundir.RunDir.output_files``) are ever moved or deleted;
what else is in the folders stays, and is reported.
"""

import contextlib
import os
import re
import tempfile
from pathlib import Path

from mnist_vae.errors import UserError
from mnist_vae.rundir import RunDir, entries

# Where --overwrite moves a replaced run until the new one has started: ".replaced.<8 random characters>".
ASIDE_PREFIX = ".replaced."
ASIDE = re.compile(r"\.replaced\.[a-z0-9_]{8}")


def remove_temporaries(run):
    """Delete what ``temporaries`` lists, and what a killed ``--overwrite`` left set aside (run
    files by name only); call it only while holding the run's lock."""
    for path in run.temporaries():
        path.unlink(missing_ok=True)
    for aside in entries(run.root):
        if ASIDE.fullmatch(aside.name) and aside.is_dir() and not aside.is_symlink():
            discard(RunDir(aside))


def set_aside(run):
    """Move the run's files (by name) into a new hidden folder of the run, all or nothing.

    Returns that folder as a ``RunDir`` for ``discard`` once the new run has started, or None
    when there was nothing to move. If any file cannot be moved (permissions, an immutable
    flag), the ones already moved go back and ``UserError`` names it: the old run stays whole.
    """
    files = run.output_files() + run.temporaries()
    if not files:
        return None
    aside = Path(tempfile.mkdtemp(dir=run.root, prefix=ASIDE_PREFIX))
    moved = []
    try:
        for path in files:
            target = aside / path.relative_to(run.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
            moved.append((path, target))
    except OSError as e:
        failed = path
        for path, target in reversed(moved):
            os.rename(target, path)
        discard(RunDir(aside))
        raise UserError(f"cannot replace the run in {run.root}: {failed} cannot be moved ({e.strerror}); nothing "
                        "was deleted; make it removable (permissions, chattr -i) or choose another --out") from None
    return RunDir(aside)


def discard(aside):
    """Delete a folder ``RunDir.set_aside`` made: the run files in it by name, then the folder if empty."""
    clear(aside)
    with contextlib.suppress(OSError):
        aside.root.rmdir()


def clear(run):
    """Delete the run's own files by name, then its folders that are left empty.

    Returns what is left in the run's folders (files and folders the user put there), as
    paths relative to the run directory; nothing outside the run's folders is looked at.
    """
    for path in run.output_files() + run.temporaries():
        path.unlink(missing_ok=True)
    return remove_empty_folders(run)


def remove_empty_folders(run):
    """Remove the run's folders that are empty; returns what is left in them, as in ``clear``."""
    for folder in run.folders():
        if folder.is_dir() and not folder.is_symlink():
            with contextlib.suppress(OSError):  # not empty: the user's files stay
                folder.rmdir()
    ours = set(run.folders())
    return sorted(p.relative_to(run.root) for folder in ours for p in entries(folder) if p not in ours)
