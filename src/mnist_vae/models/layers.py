"""The layers the architectures share: the sampling layer, the causal convolution, and the builders' small helpers."""

import keras
import numpy as np
from keras import layers, ops

PACKAGE = "mnist_vae"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(layers.Layer):
    """Reparameterisation trick: z = z_mean + exp(0.5 * z_log_var) * eps, eps ~ N(0, I)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        """Draw one z per row of ``z_mean``: (batch, latent_dim)."""
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def compute_output_shape(self, input_shape):
        """Same shape as ``z_mean``."""
        return input_shape[0]

    # Keras saves only trainable/non-trainable variables, not SeedGenerator state; saving it
    # too makes a resumed run draw the same noise an uninterrupted one would, and a reloaded
    # model reproduce the original's next sample.
    def save_own_variables(self, store):
        """Store the RNG state with the layer."""
        store["seed_state"] = self.seed_generator.state

    def load_own_variables(self, store):
        """Restore the RNG state saved by ``save_own_variables``."""
        if "seed_state" in store:
            self.seed_generator.state.assign(store["seed_state"])

    def get_config(self):
        """Serialisable constructor arguments."""
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv2D(layers.Conv2D):
    """A causal convolution (van den Oord et al., 2016): output (i, j) sees only pixels before it in raster order.

    ``mask_type="A"`` also hides pixel (i, j) itself (the first layer, which reads the image);
    ``"B"`` lets it through (later layers, whose (i, j) features already exclude pixel (i, j)).
    For single-channel images only: no masking between colour channels.
    """

    def __init__(self, filters, kernel_size, mask_type="B", **kwargs):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        super().__init__(filters, kernel_size, padding="same", **{k: v for k, v in kwargs.items() if k != "padding"})
        self.mask_type = mask_type

    def _mask(self):
        """(kh, kw, 1, 1) 0/1 array: rows above the centre, and the centre row left of (or at, for B) the centre."""
        kh, kw = self.kernel_size
        mask = np.zeros((kh, kw, 1, 1), "float32")
        mask[: kh // 2] = 1.0
        mask[kh // 2, : kw // 2 + (self.mask_type == "B")] = 1.0
        return mask

    def convolution_op(self, inputs, kernel):
        """Convolve with the masked kernel (the mask multiplies the kernel, so its gradient is masked too)."""
        return super().convolution_op(inputs, kernel * ops.convert_to_tensor(self._mask(), kernel.dtype))

    def get_config(self):
        """Serialisable constructor arguments."""
        config = super().get_config()
        config.pop("padding", None)
        return {**config, "mask_type": self.mask_type}


def with_label(h, num_classes, inputs):
    """``h`` with the one-hot label concatenated when conditional (a new ``labels`` input added to the dict ``inputs``).

    Every model takes named inputs, a dict: ``images``, ``z`` and, conditional, ``labels``.
    """
    if not num_classes:
        return h
    labels = keras.Input(shape=(num_classes,), name="labels")  # (batch, classes) one-hot
    inputs["labels"] = labels
    return layers.Concatenate()([h, labels])


OUTPUT_LAYER = "output_conv"


def as_float32(params):
    """``params`` through the float32 identity layer "params": the decoder's output, in float32 under any precision."""
    return layers.Identity(name="params", dtype="float32")(params)

