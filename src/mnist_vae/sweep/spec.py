"""A sweep's spec: the JSON object that says which Config fields vary, how, and how trials are stopped."""

import dataclasses
import itertools
import json
import math
from pathlib import Path

from mnist_vae.config import Config
from mnist_vae.errors import UserError
from mnist_vae.jsonfile import RepeatedKey, parse_json, read_config_text

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
        values = parse_json(read_config_text(Path(path)))
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
