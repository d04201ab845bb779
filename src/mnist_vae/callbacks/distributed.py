"""Callbacks of a data-parallel run: the chief's own work outside the distribution, and its local model copy."""

import keras


class Solo(keras.callbacks.Callback):
    """Runs ``callbacks`` (what only the chief of a data-parallel run does) inside ``scope()``.

    Why: under keras.distribution on several processes, anything computed or created inside the
    distribution is a step all processes take together; the chief's own pictures, scores and
    saves step outside it (``distribute.Cluster.solo_scope``). Every hook is forwarded in order.
    """

    def __init__(self, callbacks, scope):
        super().__init__()
        self.callbacks = list(callbacks)
        self.scope = scope

    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def _forward(name):  # noqa: N805  (builds the methods below)
        def hook(self, *args, **kwargs):
            with self.scope():
                for callback in self.callbacks:
                    getattr(callback, name)(*args, **kwargs)
        hook.__name__ = name
        return hook

    for _name in [f"on_{when}_{edge}" for when in ("train", "test", "predict", "epoch") for edge in ("begin", "end")] + \
            [f"on_{when}_batch_{edge}" for when in ("train", "test", "predict") for edge in ("begin", "end")]:
        locals()[_name] = _forward(_name)
    del _name, _forward


class LocalCopy(keras.callbacks.Callback):
    """Keeps ``copy``, a model built outside any tf.distribute strategy, equal to the trained one after each epoch.

    Under a multi-worker strategy, the trained model's ``predict`` is a collective step that every
    worker must take together; the pictures and scores that only the chief makes run on this copy.
    Put it before the callbacks that use it.
    """

    def __init__(self, copy):
        super().__init__()
        self.copy = copy

    def on_epoch_end(self, epoch, logs=None):
        self.copy.set_weights(self.model.get_weights())

