"""Data-parallel training on the engines Keras 3 drives; one registry, one seam in ``train.session``.

The engines (``ENGINES``, ``Config.distribute``):

- ``none``: one process, one device (the default).
- ``mirrored``: TensorFlow's ``MirroredStrategy`` over this process's GPUs (all-reduce by NCCL,
  or by copying on a CPU-only machine, where it is one replica).
- ``multi_worker_mirrored``: TensorFlow's ``MultiWorkerMirroredStrategy``: one process per worker,
  on one machine or several, the cluster described by the ``TF_CONFIG`` environment variable.
- ``data_parallel``: Keras' distribution API on JAX (``keras.distribution.DataParallel``) over every
  device; several processes (or machines) through ``jax.distributed``, set up by
  ``keras.distribution.initialize`` from ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (the coordinator's
  host:port first), ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``.
  There each process feeds its own slice of every global batch (``Cluster.input_shard``).

Semantics, whatever the engine: ``Config.batch_size`` is the **global** batch. Each step splits
it evenly over the replicas and averages the gradient over all of it, so a step is the step one
process would take on the same batch, and the learning rate needs no scaling (raise it yourself if
you raise the batch: Goyal et al.'s linear rule with ``--lr-warmup``). The batch must divide
evenly over the replicas. Every worker draws the same (seed, epoch) order of images and global
batches; the engine hands each replica its slice.

Only the chief (worker 0) writes the run folder; the other workers take the same training and
validation steps (collective operations, which every worker must call together) and write
nothing. With several processes, what only the chief does (the per-epoch pictures and latent
statistics, the final scores and plots) runs on a copy of the model built outside the engine and
synced after each epoch (``callbacks.LocalCopy``), and under keras.distribution also outside the
distribution (``Cluster.solo``), so it needs no other process. On ``--resume`` every worker
restores the chief's resume state from the run folder, so on several machines ``--out`` must be a
folder every machine sees (a shared filesystem), as TensorFlow's own multi-worker checkpointing
requires.
"""

import contextlib
import json
import os
from dataclasses import dataclass

import keras
from keras import ops

from mnist_vae.errors import UserError


@dataclass(frozen=True)
class Cluster:
    """Where this process stands in a data-parallel run, and the scope its model is built in."""

    engine: str
    replicas: int = 1
    """Devices that each take a slice of every global batch, over all workers."""
    workers: int = 1
    """Processes in the run."""
    worker_index: int = 0
    """This process's place among them; 0 is the chief, the one that writes the run folder."""
    scope: object = None
    """Context manager factory for building, compiling and training the model (None: no scope)."""
    barrier: object = None
    """Callable that returns once every worker has called it (None: one worker)."""
    solo: object = None
    """Context manager factory in which the chief computes and saves on its own, while the others train on
    (None: no need). keras.distribution on several processes: there, inside the distribution, even a
    new optimizer variable (Keras' saving makes one) is placed on every process's devices, which all
    processes must do together."""
    input_shard: tuple | None = None
    """(index, count): this process feeds rows index/count to (index+1)/count of every batch, Keras
    assembling the global batch from all processes (keras.distribution on several processes); None:
    it feeds whole batches, which the engine splits (tf.distribute, or one process)."""
    needs_jit: bool = False
    """Whether the train step must be compiled whatever ``--jit-compile`` says (keras.distribution on JAX:
    uncompiled, each sharded operation runs on its own, and on a CPU with forced host devices their
    collectives deadlock)."""
    fit_in_scope: bool = False
    """Whether ``fit`` runs inside ``scope`` too (keras.distribution shards each batch by the distribution in force),
    rather than outside it (a tf.distribute model keeps the strategy it was built under, and a model built
    outside one, such as ``train.session``'s local copy, computes alone only outside the scope)."""

    @property
    def chief(self):
        """Whether this process writes the run folder."""
        return self.worker_index == 0

    def model_scope(self):
        """The scope to build, compile and train the model in."""
        return self.scope() if self.scope is not None else contextlib.nullcontext()

    def solo_scope(self):
        """The scope of what only the chief does during ``fit`` (checkpoints, pictures, scores)."""
        return self.solo() if self.solo is not None else contextlib.nullcontext()

    def fit_scope(self):
        """The scope to call ``fit`` in."""
        return self.model_scope() if self.fit_in_scope else contextlib.nullcontext()

    @property
    def collective_predict(self):
        """Whether the trained model's ``predict`` is a step all workers must take together (several processes)."""
        return self.workers > 1

    def wait_for_all(self):
        """Return once every worker got here (e.g. all checked the run folder before the chief writes to it)."""
        if self.barrier is not None:
            self.barrier()


def _single():
    return Cluster("none")


def _mirrored():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    return Cluster("mirrored", replicas=strategy.num_replicas_in_sync, scope=strategy.scope)


def _multi_worker_mirrored():
    import tensorflow as tf

    spec = _tf_config()
    # Created before any other TensorFlow operation: the collectives are configured at start-up.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    workers = len(spec["cluster"].get("worker", [])) + len(spec["cluster"].get("chief", []))
    # The chief is the "chief" task if the cluster names one, else worker 0 (TensorFlow's convention).
    if resolver.task_type == "chief":
        index = 0
    else:
        index = resolver.task_id + (1 if "chief" in spec["cluster"] else 0)
    def barrier():
        # One all-reduce of a scalar: it completes only when every worker has contributed.
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    return Cluster("multi_worker_mirrored", replicas=strategy.num_replicas_in_sync, workers=workers,
                   worker_index=index, scope=strategy.scope, barrier=barrier)


def _tf_config():
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError("--distribute multi_worker_mirrored reads the cluster from TF_CONFIG, which is not set; "
                        'set it on every worker, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:port", '
                        '"host2:port"]}, "task": {"type": "worker", "index": 0}}\'')
    try:
        spec = json.loads(text)
        if not isinstance(spec["cluster"], dict) or not isinstance(spec["task"]["index"], int):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise UserError("TF_CONFIG must be JSON with a \"cluster\" object and a \"task\" with \"type\" and an "
                        f"integer \"index\", got {text[:80]!r}; see docs/scale-out.md") from None
    return spec


def _data_parallel():
    import jax

    processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1") or 1)
    if processes > 1 and not jax.distributed.is_initialized():
        # Collectives between CPU devices of several processes need an implementation (the tests
        # run on CPUs); GPUs use NCCL whatever this says.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize()  # jax.distributed from the KERAS_DISTRIBUTION_* variables
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    workers, index = jax.process_count(), jax.process_index()
    if workers > 1:
        # Each process hands Keras its slice of a batch (ImageBatches(shard=...)), so Keras
        # must not slice again (it would want a tf.data pipeline to shard).
        distribution.auto_shard_dataset = False

    def barrier():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("mnist_vae")

    return Cluster("data_parallel", replicas=len(distribution.device_mesh.devices.flatten()), workers=workers,
                   worker_index=index, scope=distribution.scope, fit_in_scope=True, needs_jit=True,
                   barrier=barrier if workers > 1 else None, input_shard=(index, workers) if workers > 1 else None,
                   solo=_without_distribution if workers > 1 else None)


@contextlib.contextmanager
def _without_distribution():
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


@dataclass(frozen=True)
class Engine:
    """One ``--distribute`` choice: the backend it runs on and how to join its cluster."""

    name: str
    backend: str | None  # None: any
    start: object
    summary: str


ENGINES = {
    engine.name: engine for engine in (
        Engine("none", None, _single, "one process, one device"),
        Engine("mirrored", "tensorflow", _mirrored, "tf.distribute.MirroredStrategy over this machine's GPUs"),
        Engine("multi_worker_mirrored", "tensorflow", _multi_worker_mirrored,
               "tf.distribute.MultiWorkerMirroredStrategy, one process per worker, cluster from TF_CONFIG"),
        Engine("data_parallel", "jax", _data_parallel,
               "keras.distribution.DataParallel on JAX; several processes via KERAS_DISTRIBUTION_* variables"),
    )
}


def start(name, batch_size):
    """Join (or make) the cluster of engine ``name``; a ``Cluster``. Call before anything else runs on the backend."""
    engine = ENGINES[name]
    backend = keras.backend.backend()
    if engine.backend not in (None, backend):
        other = [e.name for e in ENGINES.values() if e.backend == backend]
        raise UserError(f"--distribute {name} runs on the {engine.backend} backend and this is {backend}; set "
                        f"KERAS_BACKEND={engine.backend}" + (f" or use --distribute {' or '.join(other)}" if other else ""))
    cluster = engine.start()
    if batch_size % cluster.replicas:
        raise UserError(f"--batch-size {batch_size} does not split evenly over {cluster.replicas} replicas; "
                        f"pass a multiple of {cluster.replicas}")
    return cluster


def loopback_tf_configs(workers):
    """``TF_CONFIG`` values (JSON text) for ``workers`` processes on this machine, on free loopback ports.

    For trying multi_worker_mirrored on one machine (the tests and benchmarks/scaling.py do): start
    one ``vae train --distribute multi_worker_mirrored`` per value, each with its own TF_CONFIG.
    """
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
            for i in range(workers)]


def adapt_model(vae, cluster):
    """Fit ``vae`` (compiled, in ``cluster``'s scope) to its engine: around Keras 3's gaps under tf.distribute.

    Nothing changes for one replica or on JAX. Under tf.distribute with several replicas:

    - Each replica computes the mean loss over its slice and TensorFlow sums the gradients, so a
      slice's mean counts 1/replicas (Keras' own losses are scaled alike, and its trainer undoes
      it for the reported ``loss``).
    - Keras' TensorFlow trainer, before its own symbolic build, reduces a whole input batch with
      ``strategy.reduce``, which takes one value and fails on the (images,) tuple of per-replica
      values (keras-team/keras#20585). The model and optimizer are built here from symbolic inputs
      (no noise drawn), and that step skipped: ``KERAS_SYMBOLIC_BUILD``, checked by a canary test.
    - With several workers, Keras averages a step's logs with ``strategy.reduce("MEAN", value,
      axis=0)``, which fails on scalar metric values (tensorflow/tensorflow#72388): as (1,)
      vectors they average to the scalars Keras expects. The epoch's logs are read from the
      metrics, summed over all workers, as always.
    """
    if cluster.replicas <= 1 or keras.backend.backend() != "tensorflow":
        return vae
    compute_loss = vae.compute_loss

    def replica_share(*args, **kwargs):
        return ops.multiply(compute_loss(*args, **kwargs), 1.0 / cluster.replicas)

    vae.compute_loss = replica_share
    images = keras.KerasTensor((None, *vae.image_shape))
    labels = keras.KerasTensor((None, vae.num_classes)) if vae.conditional else None
    vae(vae.encoder_inputs(images, labels), training=False)  # the VAE's named inputs, as the encoder's
    vae.optimizer.build(vae.trainable_variables)
    setattr(vae, KERAS_SYMBOLIC_BUILD, lambda iterator=None, data_batch=None: None)
    if cluster.workers > 1:
        for step in ("train_step", "test_step"):
            setattr(vae, step, _with_worker_axis(getattr(vae, step)))
    return vae


# The private method of Keras' TensorFlow trainer that ``fit`` and ``evaluate`` call first, and that
# ``adapt_model`` replaces; tests/test_distribute.py's canary fails when Keras renames it or stops
# calling it (the dependency range names the Keras minor versions tested).
KERAS_SYMBOLIC_BUILD = "_maybe_symbolic_build"


def _with_worker_axis(step):
    def step_with_axis(*args, **kwargs):
        return {name: ops.reshape(value, (1,)) for name, value in step(*args, **kwargs).items()}

    return step_with_axis
