"""The layout of a run directory: what each command writes where, and checks on the folder itself.

Every file a command writes into a run directory is named here, so ``--overwrite`` can replace
exactly those (by name, and only where ``config.json`` shows the folder holds a run) and the next
start can recognise a killed process's temporary files.
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

from mnist_vae.archive import load_model
from mnist_vae.atomic import TEMPORARY, temporary_beside
from mnist_vae.config import Config
from mnist_vae.errors import UserError

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
_PROBE = "write-probe"  # the name behind check_writable's temporary files

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

    def folders(self):
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
                match = TEMPORARY.fullmatch(path.name)
                if match and (owned(match["name"]) or match["name"] == _PROBE):
                    found.append(path)
        return found

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
        for folder in [self.root, *self.folders()]:
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


def entries(folder):
    """The entries of a folder, or none when it is missing or unreadable."""
    try:
        return sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return []


def _files_in(folder):
    """Regular files and symlinks directly in ``folder`` (never sub-folders)."""
    return [p for p in entries(folder) if p.is_symlink() or not p.is_dir()]


def load_inference_model(run, precision="float32"):
    """The run's final VAE (``models/vae.keras``: encoder, decoder and what kind they are), computing in ``precision``.

    float32 unless asked: whatever precision trained it (weights are float32 in both), a
    held-out number is then comparable across runs; ``vae evaluate --precision`` asks for bf16.
    """
    from mnist_vae.models import set_precision

    return set_precision(load_model(run.vae, compile=False), precision)
