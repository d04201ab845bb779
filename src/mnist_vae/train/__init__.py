"""Training: ``train`` turns a ``Config`` into a finished run directory.

- ``setup``: the run folder checked, replaced or resumed, and the ``ModelConfig`` of the run;
- ``recipe``: optimizer, learning-rate and KL schedules, steps per compiled call;
- ``session``: data, model and callbacks, and Keras' ``fit``;
- ``results``: saved models, ``metrics.json`` and plots.

The chief (worker 0, the only process of a run that is not data-parallel) and the other workers
of a data-parallel run take the same steps; only the chief writes: ``session.callbacks_for`` and
``results.finish`` are where that differs.
"""

from mnist_vae import distribute
from mnist_vae.errors import UserError
from mnist_vae.lock import locked
from mnist_vae.rundir import RunDir, check_output_folder
from mnist_vae.train.results import EVAL_BATCH_SIZE, finish
from mnist_vae.train.session import fit
from mnist_vae.train.recipe import largest_divisor, make_optimizer, steps_per_execution
from mnist_vae.train.setup import check_run_dir

__all__ = ["EVAL_BATCH_SIZE", "largest_divisor", "make_optimizer", "steps_per_execution", "train"]


def train(config, out=".", resume=False, overwrite=False, data_dir=None, verbose="auto", callbacks=()):
    """Train a VAE as ``config`` says and write every output under ``out``; returns the metrics dict
    (None on a data-parallel worker other than the chief, which writes nothing).

    The run folder is locked for the whole call (a second process on it fails at once), and
    nothing in it is written before the data, the folder's permissions and its free space check out.
    """
    config = config.validate()
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one")
    check_output_folder(out)
    # First: tf.distribute's multi-worker collectives must be set up before TensorFlow runs anything.
    cluster = distribute.start(config.distribute, config.batch_size)
    run = RunDir(out)
    if not cluster.chief:
        # It checks the run folder as the chief does (so both refuse a bad one alike) and, resuming,
        # restores the chief's state from it; ``distribute`` says what the workers share.
        check_run_dir(run, config, resume, overwrite)
        cluster.wait_for_all()
        fit(run, config, resume, data_dir, 0, (), cluster)
        return None
    with locked(run, "vae train", create=True):
        check_run_dir(run, config, resume, overwrite)
        cluster.wait_for_all()  # every worker has checked the folder before this one writes to it
        return finish(run, config, fit(run, config, resume, data_dir, verbose, callbacks, cluster))
