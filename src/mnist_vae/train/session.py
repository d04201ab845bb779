"""The training session: data, model and callbacks made from the config, then Keras' ``fit``."""

import dataclasses
import sys
import time

import keras

from mnist_vae import callbacks as cbs
from mnist_vae import distribute
from mnist_vae.data import ImageBatches, held_out_images, keras_input, load_splits, one_hot
from mnist_vae.models import build_vae
from mnist_vae.precision import check_precision_runs, emulated_bf16_warning, resolve_precision
from mnist_vae.rundir import training_bytes
from mnist_vae.train.recipe import kl_schedule, largest_divisor, make_optimizer, steps_per_execution
from mnist_vae.train.setup import start_run_dir

EVAL_BATCH_SIZE = 500  # forward passes only: larger batches are faster and give the same per-image means
LATENT_MONITOR_IMAGES = 1000  # validation images whose posteriors give the per-epoch active units and KL per dimension


@dataclasses.dataclass
class Session:
    """What ``fit`` leaves for ``finish``: the trained model (a local copy under several workers) and its data."""

    vae: object
    splits: object
    eval_images: dict  # split name -> its images as scored (binarised once under --binarize dynamic)
    precision: str
    checkpoint: cbs.BestCheckpoint
    history: object = None
    seconds: float = 0.0


def fit(run, config, resume, data_dir, verbose, callbacks, cluster):
    """Build, compile, restore (``resume``) and train; returns the ``Session``."""
    keras.utils.set_random_seed(config.seed)
    # Data problems surface before anything is written, so a failed start leaves no half run.
    splits = load_splits(config.dataset, config.validation_size, config.limit, data_dir=data_dir,
                         test_limit=config.test_limit)
    precision = resolve_precision(config.precision)
    check_precision_runs(precision)
    note = emulated_bf16_warning(precision)
    if note and cluster.chief:
        print(f"vae train: warning: {note}", file=sys.stderr)
    model = config.model
    with cluster.model_scope():
        vae = build_vae(model, seed=config.seed, precision=precision)
    if cluster.chief:
        run.check_writable()
        run.check_free_space(training_bytes(4 * vae.count_params(), config.epochs))
        start_run_dir(run, config, resume)
    labels = (lambda split: one_hot(split.labels, vae.num_classes)) if vae.conditional else (lambda split: None)
    train_batches = ImageBatches(splits.train.images, config.batch_size, shuffle=True, seed=config.seed,
                                 binarize=config.binarize == "dynamic", labels=labels(splits.train),
                                 shard=cluster.input_shard)
    eval_images = {name: held_out_images(getattr(splits, name).images, config.binarize)
                   for name in ("train", "validation", "test")}
    steps = len(train_batches)
    with cluster.model_scope():
        vae.compile(optimizer=make_optimizer(config, steps), kl_weight=kl_schedule(config, steps),
                    free_bits=config.free_bits, jit_compile=config.jit_compile or cluster.needs_jit,
                    steps_per_execution=largest_divisor(steps, steps_per_execution(config, cluster)))
        distribute.adapt_model(vae, cluster)
    # What the chief scores and pictures: under several tf.distribute workers, a copy outside the
    # strategy (see callbacks.LocalCopy); else the trained model itself.
    local = build_vae(model, seed=config.seed, precision=precision) if cluster.collective_predict else vae
    # Chosen on the unweighted negative ELBO: a warm-up's down-weighted KL would favour early epochs.
    session = Session(local, splits, eval_images, precision, cbs.BestCheckpoint(run.checkpoint, "val_negative_elbo"))
    backup = _backup(run, config, session, cluster)
    with cluster.model_scope():
        initial_epoch = backup.restore(vae) if resume else 0
    val_batches = ImageBatches(eval_images["validation"], EVAL_BATCH_SIZE, labels=labels(splits.validation),
                               shard=cluster.input_shard)
    start = time.perf_counter()
    with cluster.fit_scope():
        session.history = vae.fit(
            keras_input(train_batches), validation_data=keras_input(val_batches), epochs=config.epochs,
            initial_epoch=initial_epoch, callbacks=callbacks_for(run, config, session, vae, train_batches, backup,
                                                                 callbacks, cluster),
            verbose=verbose,
            # ImageBatches shuffles by (seed, epoch). Keras' own shuffle would permute the batch
            # indices with NumPy's global RNG, which a resumed process cannot reproduce.
            shuffle=False,
        )
    session.seconds = time.perf_counter() - start
    if local is not vae:
        local.set_weights(vae.get_weights())  # from here on, nothing is collective
    return session


def _backup(run, config, session, cluster):
    """The resume state's callback: the chief saves it, every worker restores it."""
    checkpoint, precision = session.checkpoint, session.precision

    def restore_best(epoch, extra):
        checkpoint.best = extra.get("best_val_loss", checkpoint.best)
        earlier = extra.get("precision")
        if earlier and earlier != precision and cluster.chief:
            print(f"vae train: this run trained in {earlier} up to epoch {epoch}; here --precision "
                  f"{config.precision} is {precision}, so it continues in {precision} (its remaining epochs "
                  f"round differently from an uninterrupted run's)", file=sys.stderr)

    return cbs.AtomicBackupAndRestore(
        run.backup,
        extra_state=lambda: {"best_val_loss": float(checkpoint.best), "precision": precision,
                             "config": dataclasses.asdict(config)},
        on_restore=restore_best, read_only=not cluster.chief, save_scope=cluster.solo_scope)


def callbacks_for(run, config, session, vae, train_batches, backup, callbacks, cluster):
    """The callbacks of ``fit``: the chief's write the run folder; the other workers' write nothing."""
    if not cluster.chief:  # the same steps and validation (collective operations), nothing written
        return [cbs.EpochSync(train_batches), keras.callbacks.TerminateOnNaN(), backup]
    local, images, labels = session.vae, session.eval_images["validation"], session.splits.validation.labels
    own = [
        *([cbs.LocalCopy(local)] if local is not vae else []),
        # Before the CSV and TensorBoard loggers, which write the scalars it adds to the epoch's logs.
        cbs.LatentMonitor(images[:LATENT_MONITOR_IMAGES], labels[:LATENT_MONITOR_IMAGES], run.logs, model=local),
        cbs.ResumableCSVLogger(str(run.history)),
        session.checkpoint,
        keras.callbacks.TerminateOnNaN(),
        *cbs.tensorboard_callbacks(run.logs, images[:10], labels[:10], config.seed, config.grid_size, model=local),
        *callbacks,
    ]
    return [
        cbs.EpochTimer(),
        cbs.EpochSync(train_batches),
        *([cbs.Solo(own, cluster.solo_scope)] if cluster.solo is not None else own),
        backup,  # last: the state it saves includes the epoch's checkpoint score and history row
    ]
