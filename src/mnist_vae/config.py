"""The run configuration: one typed dataclass, validated once, saved as JSON beside every model."""

import dataclasses
import difflib
import functools
import json
import types
import typing
from pathlib import Path

from mnist_vae.data import BINARIZE, DATASETS
from mnist_vae.distribute import ENGINES
from mnist_vae.errors import UserError
from mnist_vae.jsonfile import RepeatedKey, clip, parse_json, read_config_text, short
from mnist_vae.models import ARCHITECTURES, ModelConfig, default_likelihood
from mnist_vae.observation import LIKELIHOODS, get_likelihood
from mnist_vae.precision import PRECISIONS


@dataclasses.dataclass
class Config:
    """Everything that determines a training run; ``config.json`` in a run directory holds it."""

    dataset: str = dataclasses.field(default="mnist", metadata={"choices": lambda: sorted(DATASETS)})
    """Dataset name from the registry (data.DATASETS): mnist, fashion_mnist, colour_mnist (32x32 RGB, built from MNIST) or cifar10."""
    binarize: str = dataclasses.field(default="none", metadata={"choices": lambda: list(BINARIZE)})
    """Pixel targets: none (grey levels, as the seed) or dynamic (Bernoulli pixels redrawn every epoch)."""
    architecture: str = dataclasses.field(default="conv", metadata={"choices": lambda: sorted(ARCHITECTURES)})
    """Encoder/decoder family: conv (the seed's description: two stride-2 convolutions, the posterior straight from their features, a Conv2DTranspose decoder), keras_io (the keras-io VAE example's layout, which the seed first copied: conv with a 16-unit ReLU bottleneck, whose units mostly die), resnet (residual, no bottleneck) or resnet_ar (resnet with an autoregressive pixel head; needs --binarize dynamic)."""
    likelihood: str = dataclasses.field(default="auto", metadata={"choices": lambda: ["auto", *sorted(LIKELIHOODS)]})
    """Observation model p(x|z): bernoulli (per-pixel logits), bernoulli_ar (resnet_ar's causal head), logistic_mixture (discretised logistic mixture of 8-bit levels, for colour), or auto: bernoulli_ar for resnet_ar, logistic_mixture for colour datasets, else bernoulli."""
    pixel_layers: int | None = None
    """Masked 3x3 residual layers in resnet_ar's causal head, after its 7x7 first layer: more context per pixel and capacity, more time per step. Unset: 2. Only for resnet_ar."""
    latent_dim: int = 2
    """Number of latent dimensions; 2 gives the manifold grid plot."""
    conditional: bool = False
    """Conditional VAE (Sohn et al., 2015): the one-hot class label enters encoder and decoder, so samples can be asked for by class."""
    beta: float = 1.0
    """Weight of the KL term in the training loss (beta-VAE, Higgins et al., 2017). Reported losses and the best checkpoint use the unweighted negative ELBO."""
    kl_warmup: int = 0
    """Epochs over which the KL weight rises linearly from 0 to --beta (epoch e trains with beta * min(1, e / KL_WARMUP)); 0: none."""
    free_bits: float = 0.0
    """Free bits (Kingma et al., 2016): nats per latent dimension of batch-averaged KL that cost nothing extra, so dimensions are not pushed to collapse; 0: off."""
    epochs: int = 30
    """Number of passes over the training images."""
    batch_size: int = 128
    """Images per optimisation step."""
    learning_rate: float = 2e-3
    """Adam learning rate (the peak one under a schedule)."""
    lr_schedule: str = dataclasses.field(default="cosine", metadata={"choices": lambda: list(LR_SCHEDULES)})
    """Learning-rate schedule over the run's steps: constant or cosine (decays to 1% by the last epoch)."""
    lr_warmup: int = 0
    """Epochs over which the learning rate rises linearly from 0 to --learning-rate before --lr-schedule takes over (Goyal et al., 2017), so a high peak rate does not blow up the first steps; 0: none."""
    validation_size: int = 5000
    """Images held out of the 60,000 training images for validation and checkpoint selection."""
    limit: int | None = None
    """Train on only the first N training images (quick runs); all of them when unset."""
    test_limit: int | None = None
    """Score and plot only the first N test images at the end of training (quick runs); all of them when unset. metrics.json says how many; `vae evaluate` has its own --limit."""
    seed: int = 0
    """One seed for every random number generator: weights, shuffling, sampling, plots."""
    precision: str = dataclasses.field(default="auto", metadata={"choices": lambda: ["auto", *PRECISIONS]})
    """Compute precision of training: auto (mixed_bfloat16 on TensorFlow on a CPU with native bf16 instructions, where it was measured faster; float32 elsewhere), float32, or mixed_bfloat16 (bf16 math, float32 weights and outputs). Reported losses are always computed in float32."""
    jit_compile: bool = False
    """Compile train steps with XLA (off by default: it halves this model's speed on CPUs)."""
    steps_per_execution: int = 16
    """Train steps per compiled call (at most; a divisor of the batches per epoch is used): fewer Python round trips. The PyTorch backend always runs 1."""
    distribute: str = dataclasses.field(default="none", metadata={"choices": lambda: list(ENGINES)})
    """Data-parallel engine (distribute.ENGINES): none, mirrored (TensorFlow: this machine's GPUs), multi_worker_mirrored (TensorFlow: one process per worker on one or several machines, the cluster in TF_CONFIG) or data_parallel (JAX: keras.distribution over this process's devices). --batch-size is the global batch, split over the replicas; only worker 0 writes the run folder (docs/scale-out.md)."""
    grid_size: int = 20
    """Rows and columns of the 2-D manifold grid in plots and TensorBoard."""

    def validate(self, source=None):
        """Raise ``UserError`` naming the first bad field; returns self for chaining.

        The field is named as its flag (``--latent-dim``), or, with ``source`` (the file or spec
        the values came from), as that source's field (``config.json: field latent_dim``).
        """
        validate(self, _namer(source))
        return self

    def resolved_likelihood(self):
        """The ``observation.LIKELIHOODS`` name this run trains: ``likelihood``, or for auto the architecture's and dataset's default."""
        if self.likelihood != "auto":
            return self.likelihood
        return default_likelihood(self.architecture, DATASETS[self.dataset].geometry.channels)

    @property
    def model(self):
        """The ``models.ModelConfig`` these fields describe on their dataset: what the saved model rebuilds from.

        The model's fields stay flat here, one flag each (``--architecture``, ``--latent-dim``), and
        this is the one place that maps them (with the dataset's geometry and classes) onto it.
        """
        spec = DATASETS[self.dataset]
        return ModelConfig(architecture=self.architecture, likelihood=self.resolved_likelihood(),
                           latent_dim=self.latent_dim, pixel_layers=self.pixel_layers,
                           num_classes=len(spec.class_names) if self.conditional else 0,
                           image_shape=spec.geometry.model_shape, pad=spec.geometry.pad)

    def to_json(self):
        """Pretty JSON text of every field."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values, source="config"):
        """Build and validate from a mapping; unknown keys are an error, missing ones take defaults."""
        if not isinstance(values, dict):
            raise UserError(f"{source}: expected a JSON object of config fields")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            shown = ", ".join(short(name) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            # The known names no longer fit on one line, so name the closest ones and where the rest are.
            close = difflib.get_close_matches(str(unknown[0]), [f.name for f in dataclasses.fields(cls)], n=2)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise UserError(f"{source}: unknown config field(s) {shown}; {hint}`vae train --help` lists the fields")
        return cls(**values).validate(source)

    @classmethod
    def load(cls, path):
        """Read and validate a ``config.json`` (a regular file of at most ``MAX_CONFIG_BYTES``)."""
        path = Path(path)
        try:
            values = parse_json(read_config_text(path))
        except RepeatedKey as e:
            raise UserError(f"{path}: {e}") from None
        # JSONDecodeError is a ValueError, and so is an integer of more than 4,300 digits.
        except ValueError as e:
            raise UserError(f"{path}: not a readable JSON config ({clip(str(e).split(';')[0], 120)})") from None
        except RecursionError:
            raise UserError(f"{path}: not a config: JSON nested too deeply (a config is one flat object)") from None
        return cls.from_dict(values, source=str(path))


def validate(config, flag):
    """Every check of a ``Config``, in one place: types, choices (the registries'), bounds, and what must fit together."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _type_matches(value, _field_types()[f.name]):
            raise UserError(f"{flag(f.name)} must be {_type_name(f.name)}, got {short(value)}")
        if "choices" in f.metadata and value not in f.metadata["choices"]():
            raise UserError(f"{flag(f.name)} must be one of {f.metadata['choices']()}, got {short(value)}")
    checks = [
        ("learning_rate", 0 < config.learning_rate < 1, "between 0 and 1"),
        ("beta", 0 <= config.beta <= 1000, "between 0 and 1,000"),
        ("free_bits", 0 <= config.free_bits <= 100, "between 0 and 100 nats per dimension"),
        *((name, _in_bounds(config, name), f"between {lo:,} and {hi:,}") for name, (lo, hi) in BOUNDS.items()),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise UserError(f"{flag(name)} must be {expected}, got {short(getattr(config, name))}")
    _check_observation_model(config, flag)
    if config.lr_warmup >= config.epochs:
        raise UserError(f"{flag('lr_warmup')} ({config.lr_warmup} epochs) must be shorter than {flag('epochs', 0)} "
                        f"({config.epochs}), so the schedule has steps to run; lower the first or raise the second")
    if config.pixel_layers is not None and not ARCHITECTURES[config.architecture].autoregressive:
        raise UserError(f"{flag('pixel_layers')} sets the causal head of an autoregressive architecture, and "
                        f"{flag('architecture', 0)} {config.architecture} has none; drop it or use resnet_ar")
    if config.conditional and not DATASETS[config.dataset].class_names:
        raise UserError(f"{flag('conditional')} needs class labels, and {flag('dataset', 0)} {config.dataset} has "
                        "none; drop it")


def _check_observation_model(config, flag):
    """The likelihood must fit the architecture's decoder, the dataset's channels and the --binarize protocol."""
    name = config.resolved_likelihood()
    likelihood, channels = get_likelihood(name), DATASETS[config.dataset].geometry.channels
    what = (f"{flag('architecture')} {config.architecture}" if config.likelihood == "auto"
            else f"{flag('likelihood')} {name}")
    if not ARCHITECTURES[config.architecture].supports(name):
        fits = sorted(a for a, arch in ARCHITECTURES.items() if arch.supports(name))
        raise UserError(f"{flag('likelihood')} {name} needs an architecture whose decoder returns its parameters: "
                        f"{', '.join(fits)} (not {config.architecture})")
    if (why := likelihood.check(channels)) is not None:
        raise UserError(f"{flag('dataset')} {config.dataset} has {channels}-channel images and {why}")
    if config.binarize not in likelihood.binarize:
        raise UserError(f"{what} {likelihood.fix}")


def _in_bounds(config, name):
    value = getattr(config, name)
    lo, hi = BOUNDS[name]
    return value is None or lo <= value <= hi  # None: an optional field left unset


# Fields --resume lets change: they do not change the trained function (only how long it trains,
# and what the end of the run scores).
# A run may be resumed with other values of these: they change neither the trained function nor
# the order of the steps (the data-parallel engines take the same global batches).
UNPINNED = ("epochs", "test_limit", "distribute")

# Inclusive bounds of the numeric fields (learning_rate: between 0 and 1): wide enough for any
# real run, narrow enough that a typo cannot overflow the RNG seed (NumPy takes 32 bits) or ask
# for 10^10 decoded images (grid_size 100,000).
BOUNDS = {
    "latent_dim": (1, 1024),
    "pixel_layers": (0, 32),
    "kl_warmup": (0, 100_000),
    "lr_warmup": (0, 100_000),
    "epochs": (1, 100_000),
    "batch_size": (1, 8192),
    "validation_size": (1, 1_000_000),
    "limit": (1, 100_000_000),
    "test_limit": (1, 100_000_000),
    "seed": (0, 2**32 - 1),
    "steps_per_execution": (1, 10_000),
    "grid_size": (2, 100),
}


def check_range(flag, value, lo, hi):
    """Raise ``UserError`` unless ``lo <= value <= hi``: the bounds check of flags outside ``Config``."""
    if not lo <= value <= hi:
        raise UserError(f"{flag} must be between {lo:,} and {hi:,}, got {short(value)}")


# Learning-rate schedules by name (see train.make_optimizer).
LR_SCHEDULES = ("constant", "cosine")

# Named starting points for a Config; flags given on the command line override them.
PRESETS = {
    # The defaults: the seed's description with the recipe that reached the best model soonest
    # (BENCHMARKS.md, "How soon does it reach the keras-io example's quality?").
    "seed": {},
    # The keras-io VAE example's layout and recipe, which the seed started from: Adam 1e-3, constant.
    "keras_io": {"architecture": "keras_io", "learning_rate": 1e-3, "lr_schedule": "constant"},
    # Comparable with the literature's tables (Burda et al., 2015): Bernoulli pixels redrawn each
    # epoch, more latents, the stronger architecture, a decaying learning rate. 50 epochs keep it
    # within about 2 hours on a 2-core CPU (see BENCHMARKS.md). float32, as its published results
    # were measured: likelihood comparisons at the level of tenths of nats are its point.
    "literature": {
        "binarize": "dynamic",
        "architecture": "resnet_ar",
        "latent_dim": 32,
        "epochs": 50,
        "learning_rate": 1e-3,
        "lr_schedule": "cosine",
        "precision": "float32",
    },
}


def _flag(name):
    return "--" + name.replace("_", "-")


def _namer(source):
    """How ``validate`` names a field: its flag, or ``SOURCE: field NAME`` (the source only at the message's start)."""
    if source is None:
        return lambda name, first=1: _flag(name)
    return lambda name, first=1: f"{source}: field {name}" if first else f"field {name}"


@functools.cache
def _field_types():
    return typing.get_type_hints(Config)


def _type_matches(value, hint):
    """Strict check of a JSON-loaded value against a field's annotation (bool is not an int)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option in (int, str, bool) and type(value) is option:
            return True
    return False


def _type_name(name):
    hint = _field_types()[name]
    options = typing.get_args(hint) or (hint,)
    return " or ".join("null" if o is type(None) else o.__name__ for o in options)
