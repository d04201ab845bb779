"""A sweep's results: ``results.csv`` and ``sweep.png`` from its trial folders."""

import csv
import json
import math
import re
from pathlib import Path

from mnist_vae.sweep.spec import METRIC


def read_history(path):
    """history.csv as a list of {column: float} (epoch as int)."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def collect(out, spec, grid):
    """Write ``results.csv`` and ``sweep.png`` from the trial folders; returns the rows."""
    rows = []
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or _trial_id_in(result.path)
        folder = out / "trials" / str(trial_id)
        row = {"trial": trial_id, **{name: result.config.get(name) for name in spec.searched}}
        history = read_history(folder / "history.csv") if (folder / "history.csv").exists() else []
        finished = (folder / "metrics.json").exists()
        row["status"] = "error" if result.error else ("finished" if finished else "stopped early")
        row["epochs"] = len(history)
        row["best_val_negative_elbo"] = min((r[METRIC] for r in history), default=math.nan)
        row["test_negative_elbo"] = (json.loads((folder / "metrics.json").read_text())["test"]["loss"]
                                     if finished else math.nan)
        row["run_dir"] = str(folder)
        rows.append(row)
    rows.sort(key=lambda r: (r["best_val_negative_elbo"] if not math.isnan(r["best_val_negative_elbo"]) else math.inf))
    columns = ["trial", *spec.searched, "status", "epochs", "best_val_negative_elbo", "test_negative_elbo", "run_dir"]
    with open(out / "results.csv.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.csv.tmp").replace(out / "results.csv")
    plot_sweep(rows, spec.plot, out / "sweep.png")
    return rows


def _trial_id_in(path):
    """The trial id in a Ray trial folder's name (``<trainable>_<5 hex>_<5 digits>_...``), for a trial that never reported."""
    match = re.search(r"_([0-9a-f]{5}_\d{5})(?:_|$)", Path(path or "").name)
    return match.group(1) if match else None


def plot_sweep(rows, axes, path):
    """sweep.png: the best validation -ELBO (and the test -ELBO of finished trials) against ``axes[0]``, one line per ``axes[1]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name = axes[0]
    series_name = axes[1] if len(axes) > 1 else None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    groups = {}
    for row in rows:
        groups.setdefault(row[series_name] if series_name else None, []).append(row)
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        members = sorted(members, key=lambda r: r[x_name])
        label = f"{series_name}={key}" if series_name else "trials"
        line, = ax.plot([r[x_name] for r in members], [r["best_val_negative_elbo"] for r in members], "-", label=label)
        for hollow in (False, True):  # hollow: stopped early by ASHA
            picked = [r for r in members if (r["status"] != "finished") == hollow]
            ax.plot([r[x_name] for r in picked], [r["best_val_negative_elbo"] for r in picked], "o",
                    color=line.get_color(), markerfacecolor="none" if hollow else line.get_color())
        tested = [r for r in members if not math.isnan(r["test_negative_elbo"])]
        ax.plot([r[x_name] for r in tested], [r["test_negative_elbo"] for r in tested], "x", color=line.get_color())
    if all(isinstance(r[x_name], (int, float)) and r[x_name] > 0 for r in rows) and \
            max(r[x_name] for r in rows) / min(r[x_name] for r in rows) >= 100:
        ax.set_xscale("log")
    ax.set_xlabel(x_name)
    ax.set_ylabel("negative ELBO (nats per image)\no: best validation (hollow: stopped early), x: test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
