"""mnist-vae: convolutional variational autoencoders on MNIST-family images, on Keras 3."""

import os
import sys

__version__ = "0.1.0"


def _import_keras_quietly():
    """Import Keras with file descriptor 2 muted, so TensorFlow's C++ start-up notices stay off.

    TF prints them from C++ while loading, and later INFO and WARNING lines from its C++ data
    pipeline (e.g. when a diverged fit stops early); they would bury one-line error messages.
    So TF_CPP_MIN_LOG_LEVEL defaults to 2 (errors only) for the process. A user who sets
    TF_CPP_MIN_LOG_LEVEL gets TF's own behaviour. Python exceptions still propagate and print as usual.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import keras  # noqa: F401

        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_keras_quietly()

# Importing the package registers the custom layers and models with Keras, so saved
# `.keras` files load with `keras.saving.load_model` and no `custom_objects`.
from mnist_vae import models as _models  # noqa: E402,F401
