"""Running a sweep's trials on Ray Tune: each an ordinary ``vae train`` folder, ASHA on the validation -ELBO."""

import json
from pathlib import Path

from mnist_vae.config import Config
from mnist_vae.errors import UserError
from mnist_vae.sweep.results import collect, read_history
from mnist_vae.sweep.spec import METRIC, load_spec, spec_from_dict


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


def run_sweep(spec_path, out, address=None, cpus_per_trial=1, data_dir=None):
    """Run (or continue) the sweep of ``spec_path`` into ``out``; returns the results table's rows."""
    from mnist_vae.lock import locked
    from mnist_vae.rundir import LOCK_FILE, RunDir, check_output_folder

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
                # Reused worker processes: a trial costs its training, not another start-up of Python
                # and TensorFlow (9 of a tiny trial's 14 s). Its result is the same as in a fresh
                # process, since `train` seeds every RNG from the config.
                tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=scheduler, num_samples=spec.samples,
                                            reuse_actors=True),
                run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=0),
            )
        grid = tuner.fit()
    finally:
        ray.shutdown()
    rows = collect(out, spec, grid)
    return rows
