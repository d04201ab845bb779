"""The options of each ``vae`` command, as typed dataclasses: ``flags.add_flags`` makes them the command line.

``vae train``'s training fields are ``config.Config``; ``TrainOptions`` are what it needs besides.
A field without a default is a positional argument; the docstring under a field is its help.
"""

import dataclasses
from pathlib import Path
from typing import Literal

from mnist_vae.config import PRESETS
from mnist_vae.data import DATASETS
from mnist_vae.precision import PRECISIONS


@dataclasses.dataclass
class TrainOptions:
    """train a VAE and write models, checkpoint, logs, plots, metrics"""

    out: Path = Path(".")
    """run directory (. is the current directory)"""
    config: Path | None = None
    """JSON file of config fields; flags given override it"""
    preset: str | None = dataclasses.field(default=None, metadata={"choices": lambda: list(PRESETS)})
    """start from a named configuration (literature: binarised, 32 latents, resnet_ar, cosine schedule); flags given override it"""
    resume: bool = False
    """continue the interrupted run in --out"""
    overwrite: bool = False
    """delete a previous run's outputs in --out first"""
    data_dir: Path | None = None
    """folder with the dataset's IDX files (else searched for)"""
    quiet: bool = False
    """no progress bar"""


@dataclasses.dataclass
class PlotOptions:
    """(re)draw the PNG plots of a trained run into DIR/plots"""

    dir: Path
    """run directory written by `vae train`"""
    grid_size: int | None = None
    """rows and columns of the manifold grid (unset: the run's)"""
    dims: tuple[int, int] = dataclasses.field(default=(0, 1), metadata={"metavar": ("I", "J")})
    """latent dimensions spanned by the manifold grid"""
    data_dir: Path | None = None
    """folder with the dataset's IDX files (else searched for)"""


@dataclasses.dataclass
class EvaluateOptions:
    """held-out -ELBO and importance-weighted NLL; writes DIR/evaluation.json"""

    dir: Path
    """run directory written by `vae train`"""
    split: Literal["test", "validation"] = "test"
    """held-out split"""
    iw_samples: int = dataclasses.field(default=1000, metadata={"metavar": "K"})
    """importance samples per image, 1 to 5000"""
    batch_size: int = 100
    """images per batch"""
    chunk_size: int = 100
    """importance samples decoded at once; bounds memory"""
    limit: int | None = None
    """evaluate only the first N images of the split"""
    seed: int = 0
    """seed of the importance samples"""
    data_dir: Path | None = None
    """folder with the dataset's IDX files (else searched for)"""
    precision: str | None = dataclasses.field(default=None, metadata={"choices": lambda: list(PRECISIONS)})
    """compute precision of encoder and decoder; the log-weights stay float32 (unset: float32; BENCHMARKS.md measures what bf16 changes)"""
    sample_quality: bool = False
    """instead of likelihoods: the dataset classifier's accuracy on 10,000 class-conditional samples (conditional models) and the Fréchet distance of 10,000 samples to the test set in its features; writes DIR/sample_quality.json"""
    samples: int | None = dataclasses.field(default=None, metadata={"metavar": "N"})
    """samples scored by --sample-quality, 200 to 50,000 (unset: 10,000)"""
    classifier: Path | None = None
    """classifier .keras file for --sample-quality (unset: the one `vae classifier train` saved)"""


@dataclasses.dataclass
class ServeOptions:
    """a local web page to see and steer a trained run's latent space"""

    dir: Path
    """run directory written by `vae train`"""
    host: str = "127.0.0.1"
    """address to listen on (127.0.0.1: this machine only; any other warns)"""
    port: int = 8000
    """port, 0 for any free one"""
    allow_host: list[str] = dataclasses.field(default_factory=list, metadata={"metavar": "NAME"})
    """another name the page may be opened by (a machine name, for --host 0.0.0.0); requests naming any other host are refused (unset: loopback names and --host)"""
    data_dir: Path | None = None
    """folder with the dataset's IDX files (else searched for)"""


@dataclasses.dataclass
class ExportOptions:
    """write a trained run's encoder and decoder as ONNX files into DIR/export"""

    dir: Path
    """run directory written by `vae train`"""
    format: Literal["onnx"] = "onnx"
    """the one format"""


@dataclasses.dataclass
class SweepOptions:
    """a grid or random search over config fields on Ray Tune, with ASHA early stopping; one run folder per trial, results.csv and sweep.png"""

    spec: Path
    """JSON sweep spec: base, grid, random, samples, early_stopping, grace_epochs, plot (see docs/scale-out.md)"""
    out: Path = dataclasses.field(default=None, metadata={"required": True})
    """sweep folder; the same command again continues a killed sweep there"""
    address: str | None = None
    """Ray cluster to run the trials on (ray://HOST:10001 or auto; unset: a Ray instance on this machine)"""
    cpus_per_trial: float = 1.0
    """CPUs Ray reserves per trial, which bounds how many run at once"""
    data_dir: Path | None = None
    """folder with the dataset's IDX files (else searched for)"""


@dataclasses.dataclass
class ClassifierTrainOptions:
    """train it on the 60,000 training images and save it"""

    dataset: str = dataclasses.field(default="mnist", metadata={"choices": lambda: sorted(DATASETS)})
    """the dataset whose samples it scores"""
    epochs: int = 8
    """passes over the training images"""
    out: Path | None = None
    """where to save it (unset: the cache folder `vae evaluate` looks in)"""
    seed: int = 0
    """random seed"""
    limit: int | None = None
    """train on only the first N training images (quick runs)"""
    data_dir: Path | None = None
    """folder with the dataset's IDX files (else searched for)"""
    quiet: bool = False
    """no progress bar"""


# command -> its options; ``vae classifier`` has one action, ``train``.
COMMANDS = {"train": TrainOptions, "plot": PlotOptions, "evaluate": EvaluateOptions, "serve": ServeOptions,
            "export": ExportOptions, "sweep": SweepOptions}
