"""mnist-vae: convolutional variational autoencoders on MNIST-family images, on Keras 3."""

import os

__version__ = "0.1.0"

# Keep TensorFlow's C++ start-up chatter off the terminal unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Importing the package registers the custom layers and models with Keras, so saved
# `.keras` files load with `keras.saving.load_model` and no `custom_objects`.
from mnist_vae import models as _models  # noqa: E402,F401
