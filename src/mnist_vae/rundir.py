"""The layout of a run directory, atomic writes into it, its lock, and loading what it holds.

Every file a command writes into a run directory is named here, so ``--overwrite`` can replace
exactly those (by name, and only where ``config.json`` shows the folder holds a run) and the next
start can recognise a killed process's temporary files.
"""

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras

from mnist_vae import archive
from mnist_vae.config import Config
from mnist_vae.errors import UserError

try:  # POSIX advisory locks; elsewhere runs are not locked (docs/training.md says so)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# What each command writes, by folder. Names only: a file the user put beside them is never ours.
ROOT_FILES = ("checkpoint.keras", "config.json", "metrics.json", "history.csv", "evaluation.json",
              "evaluation.partial.npz", "sample_quality.json")
MODEL_FILES = ("vae.keras", "encoder.keras", "decoder.keras")
PLOT_FILES = ("latent_scatter.png", "manifold.png", "reconstructions.png", "samples.png", "interpolation.png",
              "analogies.png", "class_manifolds.png")
EXPORT_FILES = ("encoder.onnx", "decoder.onnx", "export.json")  # vae export
TENSORBOARD_DIRS = ("train", "validation", "images", "latent")  # Keras' TensorBoard callback, then ours
LOCK_FILE = ".vae.lock"
# TensorFlow's event files: events.out.tfevents.<time>.<host>.<pid>.<n>.v2
_EVENT_FILE = re.compile(r"events\.out\.tfevents\.\d+\.\S+")
# The resume state (callbacks.AtomicBackupAndRestore): a pointer, its previous copy, weights.
_BACKUP_FILE = re.compile(r"state\.json(\.bkp)?|epoch-\d+-[0-9a-f]{8}\.weights\.h5")
# Temporary files: ".<final name>.<8 random characters>.tmp<suffix>" (see temporary_beside).
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*")
_PROBE = "write-probe"  # the name behind check_writable's temporary files
# Where --overwrite moves a replaced run until the new one has started: ".replaced.<8 random characters>".
_ASIDE_PREFIX = ".replaced."
_ASIDE = re.compile(r"\.replaced\.[a-z0-9_]{8}")

# Space a training run needs besides its weights (see training_bytes).
_BASE_BYTES = 20_000_000
_BYTES_PER_EPOCH = 300_000


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Paths of everything ``vae train``, ``evaluate`` and ``plot`` write under a run directory."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    models = property(lambda self: self.root / "models")
    vae = property(lambda self: self.models / "vae.keras")
    encoder = property(lambda self: self.models / "encoder.keras")
    decoder = property(lambda self: self.models / "decoder.keras")
    checkpoint = property(lambda self: self.root / "checkpoint.keras")
    logs = property(lambda self: self.root / "logs")
    plots = property(lambda self: self.root / "plots")
    config = property(lambda self: self.root / "config.json")
    metrics = property(lambda self: self.root / "metrics.json")
    history = property(lambda self: self.root / "history.csv")
    evaluation = property(lambda self: self.root / "evaluation.json")
    # An unfinished ``vae evaluate``'s finished batches (evaluate.Progress); removed when it ends.
    evaluation_partial = property(lambda self: self.root / "evaluation.partial.npz")
    sample_quality = property(lambda self: self.root / "sample_quality.json")
    lock_file = property(lambda self: self.root / LOCK_FILE)
    export = property(lambda self: self.root / "export")
    # Last-epoch training state (weights, optimizer, RNG, epoch) for --resume; removed once
    # every final file is written.
    backup = property(lambda self: self.root / "backup")
    resume_state = property(lambda self: self.backup / "state.json")  # see callbacks.AtomicBackupAndRestore

    def load_config(self):
        """The run's validated ``Config``, or a clear error when this is not a run directory."""
        if not self.config.exists():
            raise UserError(f"{self.root}: not a run directory (no config.json); train one with `vae train --out DIR`")
        return Config.load(self.config)

    def _owned_names(self):
        """Folder -> predicate on a file name: does some command of ours write that name there?"""
        return {
            self.root: ROOT_FILES.__contains__,
            self.models: MODEL_FILES.__contains__,
            self.plots: PLOT_FILES.__contains__,
            self.export: EXPORT_FILES.__contains__,
            self.backup: _BACKUP_FILE.fullmatch,
            **{self.logs / sub: _EVENT_FILE.fullmatch for sub in TENSORBOARD_DIRS},
        }

    def _folders(self):
        """The run's own folders, deepest first (so emptied ones can be removed in order)."""
        return [*(self.logs / sub for sub in TENSORBOARD_DIRS), self.logs, self.models, self.plots, self.export, self.backup]

    def output_files(self):
        """The files present that a run wrote (found by name), not counting temporaries."""
        return [path for folder, owned in self._owned_names().items()
                for path in _files_in(folder) if owned(path.name)]

    def holds_run(self):
        """Whether ``config.json`` is one this package wrote: a JSON object of exactly ``Config``'s
        fields that validates. Only then are the files at the run's names taken to be a run's."""
        try:
            text = self.config.read_text(encoding="utf-8") if self.config.is_file() else None
            values = json.loads(text) if text is not None else None
        except (OSError, ValueError):
            return False
        if not isinstance(values, dict) or set(values) != {f.name for f in dataclasses.fields(Config)}:
            return False
        try:
            Config.from_dict(values)
        except UserError:
            return False
        return True

    def temporaries(self):
        """Temporary files a killed process left behind (only ever ours: see ``temporary_beside``)."""
        found = []
        for folder, owned in self._owned_names().items():
            for path in _files_in(folder):
                match = _TEMPORARY.fullmatch(path.name)
                if match and (owned(match["name"]) or match["name"] == _PROBE):
                    found.append(path)
        return found

    def remove_temporaries(self):
        """Delete what ``temporaries`` lists, and what a killed ``--overwrite`` left set aside (run
        files by name only); call it only while holding the run's lock."""
        for path in self.temporaries():
            path.unlink(missing_ok=True)
        for aside in _entries(self.root):
            if _ASIDE.fullmatch(aside.name) and aside.is_dir() and not aside.is_symlink():
                discard(RunDir(aside))

    def set_aside(self):
        """Move the run's files (by name) into a new hidden folder of the run, all or nothing.

        Returns that folder as a ``RunDir`` for ``discard`` once the new run has started, or None
        when there was nothing to move. If any file cannot be moved (permissions, an immutable
        flag), the ones already moved go back and ``UserError`` names it: the old run stays whole.
        """
        files = self.output_files() + self.temporaries()
        if not files:
            return None
        aside = Path(tempfile.mkdtemp(dir=self.root, prefix=_ASIDE_PREFIX))
        moved = []
        try:
            for path in files:
                target = aside / path.relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(path, target)
                moved.append((path, target))
        except OSError as e:
            failed = path
            for path, target in reversed(moved):
                os.rename(target, path)
            discard(RunDir(aside))
            raise UserError(f"cannot replace the run in {self.root}: {failed} cannot be moved ({e.strerror}); nothing "
                            "was deleted; make it removable (permissions, chattr -i) or choose another --out") from None
        return RunDir(aside)

    def clear(self):
        """Delete the run's own files by name, then its folders that are left empty.

        Returns what is left in the run's folders (files and folders the user put there), as
        paths relative to the run directory; nothing outside the run's folders is looked at.
        """
        for path in self.output_files() + self.temporaries():
            path.unlink(missing_ok=True)
        return self.remove_empty_folders()

    def remove_empty_folders(self):
        """Remove the run's folders that are empty; returns what is left in them, as in ``clear``."""
        for folder in self._folders():
            if folder.is_dir() and not folder.is_symlink():
                with contextlib.suppress(OSError):  # not empty: the user's files stay
                    folder.rmdir()
        ours = set(self._folders())
        return sorted(p.relative_to(self.root) for folder in ours for p in _entries(folder) if p not in ours)

    def remove_backup(self):
        """Delete the resume state (files by name), and its folder if nothing else is in it."""
        owned = self._owned_names()[self.backup]
        for path in _files_in(self.backup):
            if owned(path.name):
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.backup.rmdir()

    def check_writable(self):
        """Raise ``UserError`` unless new files can be created in the root and in each existing run folder."""
        for folder in [self.root, *self._folders()]:
            if folder.is_dir():
                try:
                    os.remove(temporary_beside(folder / _PROBE))
                except OSError as e:
                    raise UserError(f"cannot write in {folder} ({e.strerror}); make it writable or choose another "
                                    "run folder") from None

    def check_free_space(self, needed):
        """Raise ``UserError`` unless the run's file system has ``needed`` bytes free."""
        free = shutil.disk_usage(self.root).free
        if free < needed:
            raise UserError(f"{self.root}: only {free / 1e6:.1f} MB free on its file system and this needs about "
                            f"{needed / 1e6:.0f} MB; free some space or choose another run folder")


def discard(aside):
    """Delete a folder ``RunDir.set_aside`` made: the run files in it by name, then the folder if empty."""
    aside.clear()
    with contextlib.suppress(OSError):
        aside.root.rmdir()


# Top-level folders of the operating system (Linux's file system hierarchy, macOS's): a run in one
# would scatter its files among the system's. A project folder at the top (/app, /work) is fine.
SYSTEM_FOLDERS = frozenset({"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt",
                            "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var", "Applications",
                            "Library", "System", "Users", "Volumes", "private", "cores"})


def check_output_folder(root, flag="--out"):
    """Refuse, as ``flag``, a folder no run should write into: the file system's root, a top-level
    system folder or the home folder (a run creates, and with ``--overwrite`` replaces, files there)."""
    resolved = Path(os.path.realpath(root))  # never raises: a symlink loop is left for locked() to name
    anchor = Path(resolved.anchor)
    system = resolved.parent == anchor and resolved.name in SYSTEM_FOLDERS
    what = ("the file system's root" if resolved == anchor else "a top-level system folder" if system
            else "your home folder" if resolved == Path(os.path.realpath(Path.home())) else None)
    if what:
        raise UserError(f"{flag} {root} is {what}; a run writes its files there: give it a folder of its own, "
                        f"such as {flag} {Path(root) / 'vae-run'}")


def training_bytes(model_bytes, epochs):
    """Disk space a training run may need at its peak, for weights of ``model_bytes`` bytes.

    Five files hold the weights with Adam's two slots (three times the weights) at once:
    vae.keras, checkpoint.keras, two resume states and one temporary file being renamed into
    place; the two halves hold them once more. Then plots, TensorBoard pictures, JSON and CSV.
    """
    return 16 * model_bytes + _BASE_BYTES + _BYTES_PER_EPOCH * epochs


def _entries(folder):
    """The entries of a folder, or none when it is missing or unreadable."""
    try:
        return sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return []


def _files_in(folder):
    """Regular files and symlinks directly in ``folder`` (never sub-folders)."""
    return [p for p in _entries(folder) if p.is_symlink() or not p.is_dir()]


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
            run.remove_temporaries()
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


def temporary_beside(path, suffix=""):
    """Create an empty ``.<name>.<random>.tmp<suffix>`` file beside ``path``; returns its path.

    The name pattern is what ``RunDir.temporaries`` recognises as an orphan after a kill.
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


def load_model(path, compile=True):
    """Load a ``.keras`` file written by this package, with a clear error for anything else.

    Every command that opens a model comes here: the archive's bounds are checked first
    (``archive.check_model_archive``), and Keras' safe mode refuses files that hold code.
    """
    import mnist_vae  # noqa: F401  registers the custom classes

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; train one with `vae train --out DIR`")
    archive.check_model_archive(path)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:  # Keras raises many types for a damaged archive
        text = str(e).strip()
        if "safe_mode" in text:  # Keras' refusal of a Lambda layer or other Python code
            raise UserError(f"{path}: holds Python code (a Lambda layer or a function), which is never loaded from a "
                            "file; use a model file that `vae train` wrote") from None
        first_line = text.splitlines()[0][:200] if text else type(e).__name__
        raise UserError(f"{path}: cannot load this Keras model ({first_line}); re-train or re-copy it") from None


def load_inference_model(run, precision="float32"):
    """The run's final VAE (``models/vae.keras``: encoder, decoder and what kind they are), computing in ``precision``.

    float32 unless asked: whatever precision trained it (weights are float32 in both), a
    held-out number is then comparable across runs; ``vae evaluate --precision`` asks for bf16.
    """
    from mnist_vae.models import set_precision

    return set_precision(load_model(run.vae, compile=False), precision)
