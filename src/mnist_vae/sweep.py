"""Hyperparameter sweeps on Ray Tune: every trial an ordinary run folder, ASHA early stopping, one table and one plot.

    vae sweep SPEC.json --out DIR [--address ADDR] [--cpus-per-trial N]

The spec is a JSON object (``Spec``):

    {"base": {"epochs": 10, "limit": 8192},          Config fields every trial shares
     "grid": {"beta": [0.5, 1, 2], "latent_dim": [2, 8]},   every combination is a trial ...
     "random": {"learning_rate": {"loguniform": [1e-4, 1e-2]}},   ... with these drawn per trial
     "samples": 1,                                    repeats of the grid (fresh random draws each)
     "early_stopping": "asha", "grace_epochs": 1,     ASHA on the validation -ELBO, or "none"
     "plot": ["beta", "latent_dim"]}                  x axis and series of sweep.png

DIR gets ``sweep.json`` (the spec), ``trials/<trial id>/`` (each a `vae train` folder: `vae plot`,
`vae evaluate` and `vae serve` read it), ``tune/`` (Ray's experiment state), ``results.csv`` and
``sweep.png``. Running the same command again continues a killed sweep: Ray restores the
experiment, finished and early-stopped trials are not run again, and an interrupted trial resumes
from its folder's last epoch (``vae train --resume``).

Ray is an optional dependency (``pip install "mnist-vae[sweep]"``). Without ``--address`` it
starts a Ray instance on this machine; with one (``ray://host:10001`` or ``auto``) the trials run
on that cluster, whose machines must see DIR at the same path (a shared filesystem).
"""

import csv
import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

from mnist_vae.config import Config, RepeatedKey, _read_config_text, parse_json
from mnist_vae.errors import UserError

METRIC = "val_negative_elbo"  # what ASHA compares and the best checkpoint is chosen on
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")  # ray.tune's samplers of the same names
EARLY_STOPPING = ("asha", "none")
SPEC_KEYS = ("base", "grid", "random", "samples", "early_stopping", "grace_epochs", "plot")
# Trials of one sweep (grid points x samples): a week of 10-minute trials on one CPU; more is a typo.
MAX_TRIALS = 1000


@dataclasses.dataclass
class Spec:
    """A sweep: the shared config, the searched fields and how trials are stopped."""

    base: dict
    """Config fields every trial shares (the rest take Config's defaults)."""
    grid: dict
    """field -> list of values; every combination is a trial (Ray Tune's grid_search)."""
    random: dict
    """field -> {distribution: arguments}, drawn per trial: uniform/loguniform/randint [lo, hi], choice [values]."""
    samples: int = 1
    """How many times the grid is run, each with fresh random draws (Ray Tune's num_samples)."""
    early_stopping: str = "asha"
    """asha (Li et al., 2020: stop the worse half of the trials at each rung of epochs) or none."""
    grace_epochs: int = 1
    """Epochs every trial trains before ASHA may stop it."""
    plot: list = dataclasses.field(default_factory=list)
    """[x field, series field] of sweep.png; default: the first two searched fields."""

    @property
    def searched(self):
        """The searched fields, grid first."""
        return [*self.grid, *self.random]

    def configs(self):
        """Every grid combination as a validated Config (random fields at their base/default value)."""
        names = list(self.grid)
        for values in itertools.product(*(self.grid[n] for n in names)):
            yield Config.from_dict({**self.base, **dict(zip(names, values))}, source="sweep spec")

    def to_json(self):
        """The spec as JSON text (``sweep.json``)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


def load_spec(path):
    """Read and check a sweep spec; ``UserError`` naming the first problem. Every grid point is a valid Config."""
    try:
        values = parse_json(_read_config_text(Path(path)))
    except RepeatedKey as e:
        raise UserError(f"{path}: {e}") from None
    except ValueError as e:
        raise UserError(f"{path}: not a readable JSON sweep spec ({str(e).split(';')[0][:120]})") from None
    return spec_from_dict(values, str(path))


def spec_from_dict(values, source="sweep spec"):
    """A ``Spec`` from a mapping, checked; see ``load_spec``."""
    if not isinstance(values, dict):
        raise UserError(f"{source}: expected a JSON object with {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; a spec has {', '.join(SPEC_KEYS)}")
    spec = Spec(base=values.get("base", {}), grid=values.get("grid", {}), random=values.get("random", {}),
                samples=values.get("samples", 1), early_stopping=values.get("early_stopping", "asha"),
                grace_epochs=values.get("grace_epochs", 1), plot=values.get("plot", []))
    fields = {f.name for f in dataclasses.fields(Config)}
    for key in ("base", "grid", "random"):
        if not isinstance(getattr(spec, key), dict):
            raise UserError(f"{source}: {key!r} must be an object of config fields")
    if not spec.grid and not spec.random:
        raise UserError(f"{source}: nothing to search; give \"grid\" (field: [values]) or \"random\" (field: "
                        "{\"loguniform\": [lo, hi]})")
    for name in spec.searched:
        if name not in fields:
            Config.from_dict({name: None}, source=f"{source}: searched field")  # names the close ones
        if name in spec.base:
            raise UserError(f"{source}: {name!r} is both in \"base\" and searched; drop it from one")
    overlap = sorted(set(spec.grid) & set(spec.random))
    if overlap:
        raise UserError(f"{source}: {overlap[0]!r} is in both \"grid\" and \"random\"; search it one way")
    for name, values_ in spec.grid.items():
        if not isinstance(values_, list) or not values_:
            raise UserError(f"{source}: grid field {name!r} needs a non-empty list of values, got {values_!r:.60}")
    for name, dist in spec.random.items():
        if not (isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in DISTRIBUTIONS):
            raise UserError(f"{source}: random field {name!r} needs one of {{{', '.join(DISTRIBUTIONS)}: ...}}, "
                            f"got {dist!r:.60}")
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise UserError(f"{source}: {name!r}: choice needs a non-empty list of values")
        elif not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)
                  and args[0] < args[1]):
            raise UserError(f"{source}: {name!r}: {kind} needs [low, high] with low < high, got {args!r:.60}")
    if not isinstance(spec.samples, int) or isinstance(spec.samples, bool) or not 1 <= spec.samples <= MAX_TRIALS:
        raise UserError(f"{source}: \"samples\" must be an integer from 1 to {MAX_TRIALS:,}, got {spec.samples!r:.40}")
    trials = math.prod(len(values_) for values_ in spec.grid.values()) * spec.samples
    if trials > MAX_TRIALS:
        raise UserError(f"{source}: the grid's {trials // spec.samples:,} points x \"samples\" {spec.samples:,} make "
                        f"{trials:,} trials, and a sweep runs at most {MAX_TRIALS:,}; search fewer values or lower "
                        "\"samples\"")
    if spec.early_stopping not in EARLY_STOPPING:
        raise UserError(f"{source}: \"early_stopping\" must be one of {list(EARLY_STOPPING)}, got {spec.early_stopping!r:.40}")
    configs = list(spec.configs())  # every grid point must be a run `vae train` would accept
    for config in configs:
        _check_random_fields(spec, config, source)
    epochs = configs[0].epochs
    if not isinstance(spec.grace_epochs, int) or not 1 <= spec.grace_epochs <= epochs:
        raise UserError(f"{source}: \"grace_epochs\" must be an integer from 1 to the trials' epochs ({epochs})")
    if "epochs" in spec.searched:
        raise UserError(f"{source}: search other fields than epochs; ASHA stops trials early on its own")
    spec.plot = list(spec.plot) or spec.searched[:2]
    if len(spec.plot) > 2 or any(name not in spec.searched for name in spec.plot):
        raise UserError(f"{source}: \"plot\" names at most two searched fields (x axis, series), got {spec.plot!r:.80}")
    return spec


def _check_random_fields(spec, config, source):
    """Each random field's extremes (or choices) must make valid configs too."""
    for name, dist in spec.random.items():
        kind, args = next(iter(dist.items()))
        for value in args:
            Config.from_dict({**dataclasses.asdict(config), name: value}, source=f"{source}: random {name}")


def param_space(spec):
    """The Ray Tune search space of ``spec``."""
    from ray import tune

    space = {name: tune.grid_search(values) for name, values in spec.grid.items()}
    for name, dist in spec.random.items():
        kind, args = next(iter(dist.items()))
        sampler = getattr(tune, kind)
        space[name] = sampler(args) if kind == "choice" else sampler(*args)
    return space


def run_trial(params, sweep_dir, base, data_dir=None):
    """One trial (Ray calls it in a worker process): a `vae train` folder under ``sweep_dir/trials``.

    Continues the folder where a killed sweep left it, and only reports a finished one's result.
    Each epoch but the last reports the validation -ELBO, on which ASHA may stop the trial there;
    the last is reported after the run folder is complete (test scores and plots written), so a
    stop there cannot cut a finished trial short.
    """
    from ray import tune

    from mnist_vae.rundir import RunDir
    from mnist_vae.train import train

    config = Config.from_dict({**base, **params}, source="sweep trial")
    out = Path(sweep_dir) / "trials" / tune.get_context().get_trial_id()
    run = RunDir(out)
    if not (run.metrics.exists() and not run.resume_state.exists()):
        train(config, out, resume=run.config.exists(), data_dir=data_dir, verbose=0,
              callbacks=[_report_callback(config.epochs)])
    metrics = json.loads(run.metrics.read_text())
    tune.report({METRIC: min(row[METRIC] for row in read_history(run.history)), "epoch": config.epochs,
                 "test_negative_elbo": metrics["test"]["loss"]})


def _report_callback(epochs):
    import keras
    from ray import tune

    class Report(keras.callbacks.Callback):
        """Sends each epoch's validation -ELBO, but the last's, to Ray Tune (ASHA decides on it)."""

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 < epochs:
                tune.report({METRIC: float((logs or {})[METRIC]), "epoch": epoch + 1})

    return Report()


def read_history(path):
    """history.csv as a list of {column: float} (epoch as int)."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def run_sweep(spec_path, out, address=None, cpus_per_trial=1, data_dir=None):
    """Run (or continue) the sweep of ``spec_path`` into ``out``; returns the results table's rows."""
    from mnist_vae.rundir import LOCK_FILE, RunDir, check_output_folder, locked

    spec = load_spec(spec_path)
    check_output_folder(out)
    out = Path(out).resolve()
    saved = out / "sweep.json"
    if saved.exists():
        if spec_from_dict(json.loads(saved.read_text()), str(saved)).to_json() != spec.to_json():
            raise UserError(f"{out} holds a sweep of another spec ({saved}); continue it with that spec or "
                            "choose another --out")
    elif out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise UserError(f"{out} is not empty and holds no sweep; choose an empty or new --out")
    if not isinstance(cpus_per_trial, (int, float)) or not 0 < cpus_per_trial <= 1024:
        raise UserError(f"--cpus-per-trial must be between 0 and 1,024, got {cpus_per_trial}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError('vae sweep needs Ray Tune: pip install "mnist-vae[sweep]" (or "ray[tune]")') from None

    # One driver per sweep folder: a second one (or one started while a killed one's Ray is still
    # shutting down) would resume the same trial folders.
    with locked(RunDir(out), "vae sweep", create=True):
        return _fit(spec, out, saved, address, cpus_per_trial, data_dir)


def _fit(spec, out, saved, address, cpus_per_trial, data_dir):
    """The sweep itself, on Ray Tune, under the sweep folder's lock."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    (out / "trials").mkdir(exist_ok=True)
    if not saved.exists():
        saved.write_text(spec.to_json())
    epochs = next(spec.configs()).epochs
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, sweep_dir=str(out), base=spec.base, data_dir=data_dir),
        {"cpu": cpus_per_trial})
    ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False,
             ignore_reinit_error=True)
    try:
        experiment = out / "tune"
        if tune.Tuner.can_restore(experiment):
            # Finished (and early-stopped) trials stay done; interrupted ones run again, and their
            # folders resume from the last saved epoch.
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            scheduler = (ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=spec.grace_epochs,
                                       reduction_factor=2)
                         if spec.early_stopping == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=param_space(spec),
                tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=scheduler, num_samples=spec.samples),
                run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=0),
            )
        grid = tuner.fit()
    finally:
        ray.shutdown()
    rows = collect(out, spec, grid)
    return rows


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
