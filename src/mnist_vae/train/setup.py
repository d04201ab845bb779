"""Before training: the run folder is checked, replaced or resumed.

Nothing here trains; everything here can refuse (a ``UserError``) before a file is written.
"""

import dataclasses
import sys

from mnist_vae import callbacks as cbs
from mnist_vae.config import UNPINNED, Config
from mnist_vae.errors import UserError
from mnist_vae.atomic import write_text_atomic
from mnist_vae.replacing import discard, remove_empty_folders, set_aside


def check_run_dir(run, config, resume, overwrite):
    """Refuse, before anything is written, a run directory that cannot be used as asked."""
    if resume:
        if not run.config.exists():
            raise UserError(f"{run.root}: no run to resume (no config.json); start one without --resume")
        saved = Config.load(run.config)
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.name not in UNPINNED and getattr(saved, f.name) != getattr(config, f.name)]
        if changed:
            raise UserError(
                f"{run.root}: --resume continues the saved run, whose {', '.join(changed)} differ from the "
                "ones given; drop those flags (only --epochs and --test-limit may change) or train into a new --out"
            )
        if run.metrics.exists() and not run.resume_state.exists():
            raise UserError(f"{run.root}: this run already finished; train a new one with another --out")
        check_state_matches(run, saved)
        return
    found = run.output_files()
    if not found:
        return
    names = ", ".join(sorted({str(p.relative_to(run.root)) for p in found})[:4])
    if not run.holds_run():
        # Files at a run's names but no config.json of ours: the user's (or another tool's), never replaced.
        raise UserError(f"{run.root} holds files at the names a run writes ({names}) that no `vae train` wrote "
                        "(its config.json is not one this package writes); they are kept: choose another --out")
    if not overwrite:
        raise UserError(f"{run.root} already holds a run ({names}); pass --resume to continue it, --overwrite to "
                        "replace it (its files are deleted by name once the new run has started), or choose "
                        "another --out")


def check_state_matches(run, config):
    """Refuse a resume whose ``config.json`` no longer describes the model its training state saved."""
    state = cbs.AtomicBackupAndRestore.saved_state(run.backup)
    saved = state.get("extra", {}).get("config")
    if saved is None:
        return
    fields = {f.name for f in dataclasses.fields(Config)}
    differ = [name for name, value in saved.items()
              if name in fields and name not in UNPINNED and getattr(config, name) != value]
    if differ:
        name = differ[0]
        raise UserError(f"{run.config}: {name} is {getattr(config, name)!r}, but the training state in {run.backup} "
                        f"was saved with {name} {saved[name]!r}; restore that value in config.json to keep its "
                        f"{state.get('epoch', 0)} finished epochs, or train into a new --out")


def start_run_dir(run, config, resume):
    """Replace an old run (never for --resume) and write ``config.json``.

    The old run's files are moved aside first (all or nothing), and deleted only once the new
    ``config.json`` is written; what no run wrote stays, and is named on stderr.
    """
    aside = None if resume else set_aside(run)
    write_text_atomic(run.config, config.to_json())
    if aside is not None:
        discard(aside)
    if not resume:
        kept = [str(p) for p in remove_empty_folders(run)]
        if kept:
            shown = ", ".join(kept[:8]) + (f" and {len(kept) - 8} more" if len(kept) > 8 else "")
            print(f"vae train: kept {len(kept)} entries in {run.root} that no run wrote: {shown}", file=sys.stderr)
