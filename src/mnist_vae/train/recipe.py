"""The training recipe's parts that are functions of the config: optimizer and schedules, steps per call."""

import keras

from mnist_vae.losses import KLSchedule


def make_optimizer(config, steps_per_epoch):
    """Adam at ``config.learning_rate``, warmed up over ``config.lr_warmup`` epochs, then decayed as
    ``config.lr_schedule`` says over the remaining configured epochs."""
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = config.lr_warmup * steps_per_epoch
    # Cosine to 1% of the start by the last step (Loshchilov & Hutter, 2017); "constant" is the
    # same curve with a floor of 100%. The optimizer's step counter is saved with the resume state,
    # so a resumed run continues the same curve.
    floor = {"constant": 1.0, "cosine": 0.01}[config.lr_schedule]
    if not warmup_steps:  # the schedules of every run before lr_warmup existed, unchanged
        if config.lr_schedule == "constant":
            return keras.optimizers.Adam(config.learning_rate)
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps,
                                                                            alpha=floor))
    # Keras's CosineDecay warms up linearly from its initial rate (0 here) to warmup_target, then
    # decays from there over decay_steps.
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        0.0, total_steps - warmup_steps, alpha=floor, warmup_target=config.learning_rate, warmup_steps=warmup_steps))


def kl_schedule(config, steps_per_epoch):
    """The KL weight as a schedule of the optimizer's step: ``config.beta``, warmed up over ``config.kl_warmup`` epochs."""
    return KLSchedule(config.beta, config.kl_warmup, steps_per_epoch)


def steps_per_execution(config, cluster=None):
    """``config.steps_per_execution``, or 1 on the PyTorch backend, whose trainer runs one step per call, and
    under several tf.distribute workers, where Keras' multi-step loop fails to run (a placeholder in its
    ``while`` condition is never fed; TensorFlow 2.21, Keras 3.15)."""
    if keras.backend.backend() == "torch" or (cluster is not None and cluster.collective_predict):
        return 1
    return config.steps_per_execution


def largest_divisor(n, at_most):
    """The largest divisor of ``n`` not above ``at_most``.

    Keras' progress bar counts whole executions, so a ``steps_per_execution`` that does not
    divide the batches per epoch shows e.g. "432/430".
    """
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)
