"""A run folder's lock: one process at a time, taken over from a killed holder, orphans cleaned on taking it."""

import contextlib
import errno
import json
import os
from pathlib import Path

from mnist_vae.errors import UserError
from mnist_vae.replacing import remove_temporaries

try:  # POSIX advisory locks; elsewhere runs are not locked (docs/training.md says so)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


@contextlib.contextmanager
def locked(run, command, create=False):
    """Hold ``run``'s lock for the block: a second process on the same folder fails at once.

    The lock is ``flock`` on ``<run>/.vae.lock``: the kernel drops it when its holder dies, so a
    file left by a killed process is simply taken over. While it is held, temporary files in the
    run's folders can only be orphans, and are removed. With ``create``, a missing run folder is
    made; if the block fails, the folders made here are removed again when they are still empty.
    """
    root = run.root
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file, not a folder; choose a folder for the run")
    made = _make_folders(root) if create else []
    try:
        fd = _acquire(run.lock_file, command)
        try:
            remove_temporaries(run)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(run.lock_file)  # while still holding it: see _acquire
            os.close(fd)
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty: a failed start leaves no trace
        raise


def _make_folders(root):
    """Create ``root`` and missing parents; returns the folders created, outermost first."""
    missing = []
    path = Path(os.path.abspath(root))
    while not path.exists():
        if path.is_symlink():
            raise UserError(f"{path} is {_broken_link(path)}; fix the link or choose another folder for the run")
        missing.append(path)
        path = path.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run folder {root} ({e.strerror}); choose another one") from None
    return list(reversed(missing))


def _broken_link(path):
    """How a symlink that does not resolve fails: a loop, or a target that does not exist."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink that loops back on itself"
    return f"a dangling symlink (to {os.readlink(path)}, which does not exist)"


def _acquire(path, command):
    """Open and ``flock`` the lock file; returns its descriptor, or raises ``UserError`` if it is held."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(f"cannot write in {path.parent} ({e.strerror}); make it writable or choose another "
                            "run folder") from None
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {path} ({e.strerror})") from None
            raise UserError(f"{path.parent} is in use by another vae process ({holder}); wait for it to end or "
                            "stop it") from None
        # Its previous holder unlinks the file before letting go, so a lock on an inode that is no
        # longer at ``path`` is worthless: open the new file and try again.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "command": command}).encode())
    return fd


def _read_holder(fd):
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return f"pid {int(holder['pid'])}, `{str(holder['command'])[:80]}`"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"
