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

from mnist_vae.sweep.spec import MAX_TRIALS, METRIC, Spec, load_spec, spec_from_dict
from mnist_vae.sweep.results import read_history
from mnist_vae.sweep.trials import param_space, run_sweep, run_trial

__all__ = ["MAX_TRIALS", "METRIC", "Spec", "load_spec", "param_space", "read_history", "run_sweep", "run_trial",
           "spec_from_dict"]
