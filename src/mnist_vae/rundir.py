"""The layout of a run directory, atomic writes into it, and loading what it holds."""

import dataclasses
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import keras

from mnist_vae.errors import UserError


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Paths of everything ``vae train`` writes under ``--out``."""

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
    # Last-epoch training state (weights, optimizer, RNG, epoch) for --resume; removed once
    # every final file is written.
    backup = property(lambda self: self.root / "backup")

    def load_config(self):
        """The run's validated ``Config``, or a clear error when this is not a run directory."""
        from mnist_vae.config import Config

        if not self.config.exists():
            raise UserError(f"{self.root}: not a run directory (no config.json); train one with `vae train --out DIR`")
        return Config.load(self.config)

    def outputs(self):
        """Every path ``vae train`` creates, for --overwrite to clear."""
        return [self.models, self.checkpoint, self.logs, self.plots, self.config,
                self.metrics, self.history, self.backup]

    def existing_outputs(self):
        """The outputs already present."""
        return [p for p in self.outputs() if p.exists()]

    def clear(self):
        """Delete this run's own outputs (and nothing else in the folder)."""
        for path in self.existing_outputs():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _temporary_beside(path, suffix):
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=suffix)
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
    tmp = _temporary_beside(path, suffix or "".join(path.suffixes))
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
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
    """Load a ``.keras`` file written by this package, with a clear error for anything else."""
    import mnist_vae  # noqa: F401  registers the custom classes

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; train one with `vae train --out DIR`")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a Keras model file (.keras files are zip archives); re-train or re-copy it")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as e:  # Keras raises many types for a damaged archive
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot load this Keras model ({first_line}); re-train or re-copy it") from None


def load_inference_models(run):
    """The run's (encoder, decoder), computing in float32 whatever precision they were trained in."""
    from mnist_vae.models import set_precision

    return tuple(set_precision(load_model(path, compile=False), "float32") for path in (run.encoder, run.decoder))
