"""mnist-vae: convolutional variational autoencoders on MNIST-family images, on Keras 3."""

import importlib.util
import logging
import os
import sys

__version__ = "0.1.0"


def _import_keras_quietly():
    """Import Keras with file descriptor 2 muted, so TensorFlow's C++ start-up notices stay off.

    TF prints them from C++ while loading, and later INFO and WARNING lines from its C++ data
    pipeline (e.g. when a diverged fit stops early); they would bury one-line error messages.
    So TF_CPP_MIN_LOG_LEVEL defaults to 2 (errors only) for the process. A user who sets it below
    2 (to see TF's INFO or WARNING lines) gets TF's own behaviour, start-up notices included. At 2
    or more (or unset) the import is muted too: TF 2.21 prints its start-up notices through absl
    before it reads the variable (e.g. "oneDNN custom operations are on" on CPUs with AVX512_VNNI
    or AVX512_BF16, where it enables oneDNN by default), and child processes inherit the 2 set
    here. Python exceptions still propagate and print as usual. On the other backends TensorFlow,
    where installed, is imported in the same muted window: Keras' ``set_random_seed`` imports it
    to seed it too, and its notices would otherwise come in the middle of a run.
    """
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if level.strip() in ("0", "1"):
        import keras  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras

        if keras.backend.backend() != "tensorflow" and importlib.util.find_spec("tensorflow") is not None:
            try:
                import tensorflow  # noqa: F401
            except ImportError:  # a broken or stand-in install: Keras treats it as absent too
                pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _SharedStepRetracing:
    """Drops TensorFlow's "triggered tf.function retracing" warning about Keras' own predict step.

    TensorFlow counts traces per Python code object, and every Keras model's predict step is the
    same code (``TensorFlowTrainer.make_predict_function``): the first trace of each of a run's
    models (encoder, decoder, scorers) adds up to the warning, though none of them retraces in a
    loop. Any other function's retracing warning still shows.
    """

    def filter(self, record):
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "make_predict_function" in message)


_import_keras_quietly()
logging.getLogger("tensorflow").addFilter(_SharedStepRetracing())

# Importing the package registers the custom layers and models with Keras, so saved
# `.keras` files load with `keras.saving.load_model` and no `custom_objects`.
from mnist_vae import models as _models  # noqa: E402,F401
