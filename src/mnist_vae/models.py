"""Layers and models: the seed's convolutional encoder and decoder, the sampling layer, the VAE.

No loss formulas and no file I/O live here; the VAE delegates its objective to ``losses``.
"""

import keras
import numpy as np
from keras import layers, ops

from mnist_vae import losses
from mnist_vae.observation import PAD

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


def build_seed_encoder(image_shape=(32, 32, 1), latent_dim=2):
    """The seed encoder: two stride-2 convolutions -> Dense 16 -> (z_mean, z_log_var)."""
    images = keras.Input(shape=image_shape, name="images")  # (batch, 32, 32, 1) in [0, 1]
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(images)  # (b, 16, 16, 32)
    h = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 8, 8, 64)
    h = layers.Flatten()(h)
    h = layers.Dense(16, activation="relu")(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def build_seed_decoder(image_shape=(32, 32, 1), latent_dim=2):
    """The seed decoder: Dense 8*8*64 -> two stride-2 transposed convolutions -> logits."""
    height, width, channels = image_shape
    if height % 4 or width % 4:
        raise ValueError(f"image side must be a multiple of 4 for two stride-2 layers, got {image_shape}")
    z = keras.Input(shape=(latent_dim,), name="z")
    h = layers.Dense((height // 4) * (width // 4) * 64, activation="relu")(z)
    h = layers.Reshape((height // 4, width // 4, 64))(h)  # (b, 8, 8, 64)
    h = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 16, 16, 64)
    h = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)  # (b, 32, 32, 32)
    # No sigmoid: the decoder returns Bernoulli logits; images are sigmoid(logits).
    logits = layers.Conv2DTranspose(channels, 3, padding="same", name="logits")(h)  # (b, 32, 32, 1)
    return keras.Model(z, logits, name="decoder")


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


def _residual(h, filters):
    """relu(h + conv(relu(conv(h)))): a shape-preserving residual block (He et al., 2016)."""
    r = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
    r = layers.Conv2D(filters, 3, padding="same")(r)
    return layers.ReLU()(layers.Add()([h, r]))


def build_resnet_encoder(image_shape=(32, 32, 1), latent_dim=32):
    """Seed-like convolutions plus a residual block, with no 16-unit bottleneck before the posterior."""
    images = keras.Input(shape=image_shape, name="images")  # (batch, 32, 32, c)
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(images)  # (b, 16, 16, 32)
    h = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 8, 8, 64)
    h = _residual(h, 64)
    h = layers.Flatten()(h)  # (b, 4096) straight to the posterior, so 32-64 latents are not starved
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def _resnet_features(z, image_shape):
    """Latent -> (b, H, W, 32) feature maps: Dense, a residual block at 8x8, two stride-2 transposed convs."""
    height, width, _ = image_shape
    if height % 4 or width % 4:
        raise ValueError(f"image side must be a multiple of 4 for two stride-2 layers, got {image_shape}")
    h = layers.Dense((height // 4) * (width // 4) * 64, activation="relu")(z)
    h = layers.Reshape((height // 4, width // 4, 64))(h)  # (b, 8, 8, 64)
    h = _residual(h, 64)
    h = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 16, 16, 64)
    return layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)  # (b, 32, 32, 32)


def build_resnet_decoder(image_shape=(32, 32, 1), latent_dim=32):
    """Residual decoder with a factorised Bernoulli output: z -> (b, 32, 32, c) logits."""
    z = keras.Input(shape=(latent_dim,), name="z")
    logits = layers.Conv2D(image_shape[-1], 3, padding="same", name="logits")(_resnet_features(z, image_shape))
    return keras.Model(z, logits, name="decoder")


def build_pixel_head(feature_shape, channels=1, filters=32, layers_b=2):
    """p(x_ij | x_<ij, z): causal convolutions over the image plus the decoder's features -> logits.

    Inputs: features (b, h, w, filters) from z and the image (b, h, w, channels); output logits
    (b, h, w, channels) where (i, j) depends on the image only through pixels before (i, j).
    """
    if channels != 1:
        raise ValueError(f"the autoregressive head models single-channel images, got {channels} channels")
    features = keras.Input(shape=feature_shape, name="features")
    image = keras.Input(shape=(*feature_shape[:-1], channels), name="image")
    h = MaskedConv2D(filters, 7, mask_type="A")(image)  # (b, h, w, filters): pixels strictly before (i, j)
    h = layers.ReLU()(layers.Add()([h, features]))
    for _ in range(layers_b):
        h = layers.ReLU()(layers.Add()([h, MaskedConv2D(filters, 3, mask_type="B")(h)]))
    logits = layers.Conv2D(channels, 1, name="head_logits")(h)
    return keras.Model([features, image], logits, name="pixel_head")


def build_resnet_ar_decoder(image_shape=(32, 32, 1), latent_dim=32):
    """Residual decoder with an autoregressive (PixelCNN-style) output: [z, images] -> logits.

    The latent carries global shape; the causal head models what a factorised Bernoulli cannot,
    the dependence between neighbouring pixels (as in PixelVAE, Gulrajani et al., 2017). The head
    runs on the 28x28 pixels that are scored; the padding's logits are 0 and never used.
    """
    z = keras.Input(shape=(latent_dim,), name="z")
    images = keras.Input(shape=image_shape, name="images")  # (b, 32, 32, c) the pixels being modelled
    features = layers.Cropping2D(PAD, name="features")(_resnet_features(z, image_shape))  # (b, 28, 28, 32)
    context = layers.Cropping2D(PAD)(images)  # (b, 28, 28, c)
    # Spatial sides left open so a sampler can run the head on the few rows a pixel depends on.
    head = build_pixel_head((None, None, features.shape[-1]), image_shape[-1])
    logits = layers.ZeroPadding2D(PAD, name="logits")(head([features, context]))  # (b, 32, 32, c)
    return keras.Model([z, images], logits, name="decoder")


def rows_seen_above(head):
    """How many rows above a pixel the causal ``head`` reads: the sum of its masked kernels' half-heights."""
    return sum(layer.kernel_size[0] // 2 for layer in head.layers if isinstance(layer, MaskedConv2D))


def autoregressive_parts(decoder):
    """(z -> features model, causal head) of a ``build_resnet_ar_decoder`` decoder, for pixel-by-pixel sampling."""
    return keras.Model(decoder.inputs[0], decoder.get_layer("features").output), decoder.get_layer("pixel_head")


def is_autoregressive(decoder):
    """Whether ``decoder`` takes [z, images] (pixel i conditioned on pixels before it) rather than z alone."""
    return len(decoder.inputs) == 2


# architecture name -> (encoder builder, decoder builder); new ones register here.
ARCHITECTURES = {
    "seed": (build_seed_encoder, build_seed_decoder),
    "resnet": (build_resnet_encoder, build_resnet_decoder),
    "resnet_ar": (build_resnet_encoder, build_resnet_ar_decoder),
}
# Decoders of these model binary pixels conditioned on earlier ones, so need --binarize dynamic.
AUTOREGRESSIVE = {"resnet_ar"}


# Compute precisions by name (Keras dtype policies). Weights and optimizer state are float32 in both.
PRECISIONS = ("float32", "mixed_bfloat16")
# Layers kept in float32 whatever the precision: the posterior's parameters and the logits feed
# the loss's sums over latents and 784 pixels, which bf16's 8-bit mantissa would round coarsely.
FLOAT32_LAYERS = frozenset({"z_mean", "z_log_var", "logits", "head_logits"})


def set_precision(model, precision):
    """Give every layer inside ``model`` the ``precision`` compute policy (output layers stay float32); returns ``model``.

    Takes effect on the next call or trace, so set it before building or compiling; the layers'
    policies are saved with the model.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    for layer in _inner_layers(model):
        # Sub-models and the input/sampling layers pass float32 tensors through unchanged;
        # only layers that compute get the mixed policy (each casts its own inputs).
        if isinstance(layer, (keras.Model, layers.InputLayer, Sampling)):
            continue
        layer.dtype_policy = "float32" if layer.name in FLOAT32_LAYERS else precision
    return model


def _inner_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _inner_layers(layer)


def build_vae(image_shape=(32, 32, 1), latent_dim=2, architecture="seed", seed=None, beta=1.0, precision="float32"):
    """Build a VAE of the named architecture and ``precision`` with its variables created, ready to compile."""
    try:
        build_encoder, build_decoder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}"
        ) from None
    encoder = build_encoder(image_shape, latent_dim)
    decoder = build_decoder(image_shape, latent_dim)
    vae = set_precision(VAE(encoder, decoder, seed=seed, beta=beta), precision)
    vae(ops.zeros((1, *image_shape)))  # create every variable now so weights can be restored
    return vae


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """Encoder -> Sampling -> decoder; ``fit`` minimises the negative ELBO in nats per image.

    ``call`` returns a dict: ``logits`` (batch, H, W, C), ``z_mean`` and ``z_log_var``
    (batch, latent_dim).
    """

    def __init__(self, encoder, decoder, seed=None, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.seed = seed
        self.beta = float(beta)
        self.sampling = Sampling(seed=seed, name="sampling")
        # Per-image means (the trackers are updated with (batch,) vectors), so a partial last
        # batch is weighted by its size, as Keras does for the total ``loss``.
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def latent_dim(self):
        """Number of latent dimensions."""
        return self.decoder.inputs[0].shape[-1]

    @property
    def image_shape(self):
        """(height, width, channels) of the padded images the model takes."""
        return tuple(self.encoder.inputs[0].shape[1:])

    def call(self, inputs, training=False):
        """Encode, sample one z per image, decode."""
        z_mean, z_log_var = self.encoder(inputs, training=training)
        z = self.sampling([z_mean, z_log_var])
        # An autoregressive decoder reads the image itself (causally masked) beside z.
        logits = self.decoder([z, inputs] if is_autoregressive(self.decoder) else z, training=training)
        return {"logits": logits, "z_mean": z_mean, "z_log_var": z_log_var}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean negative ELBO over the batch; also updates the named term trackers."""
        target = x if y is None else y
        terms = losses.vae_loss(
            target, y_pred["logits"], y_pred["z_mean"], y_pred["z_log_var"], beta=self.beta
        )
        self.reconstruction_loss_tracker.update_state(terms["reconstruction_loss"])
        self.kl_loss_tracker.update_state(terms["kl_loss"])
        return ops.mean(terms["loss"])

    def get_config(self):
        """Everything needed to rebuild the model, sub-models included."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "seed": self.seed,
            "beta": self.beta,
        }

    @classmethod
    def from_config(cls, config):
        """Inverse of ``get_config``."""
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)
