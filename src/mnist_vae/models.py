"""Layers and models: the seed's convolutional encoder and decoder, the sampling layer, the VAE.

No loss formulas and no file I/O live here; the VAE delegates its objective to ``losses``.
"""

import dataclasses
import typing

import keras
import numpy as np
from keras import layers, ops

from mnist_vae import losses
from mnist_vae.distribute import replica_mean
from mnist_vae.observation import PAD, Geometry, get_likelihood

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


def _with_label(h, num_classes, inputs):
    """``h`` with the one-hot label concatenated when conditional (a new ``labels`` input appended to ``inputs``)."""
    if not num_classes:
        return h
    labels = keras.Input(shape=(num_classes,), name="labels")  # (batch, classes) one-hot
    inputs.append(labels)
    return layers.Concatenate()([h, labels])


def _inputs(inputs):
    """A functional model's inputs: the tensor itself when there is one, so unconditional models keep their old signature."""
    return inputs[0] if len(inputs) == 1 else inputs


def build_keras_io_encoder(image_shape=(32, 32, 1), latent_dim=2, num_classes=0, hidden=16):
    """The keras-io VAE example's encoder (the seed's first layout): two stride-2 convolutions -> Dense ``hidden`` (ReLU) -> (z_mean, z_log_var).

    ``hidden=0`` leaves the Dense layer out (``build_conv_encoder``). With ``num_classes``, the
    one-hot label (input ``labels``) joins the flattened features before the Dense layer: q(z | x, y).
    """
    images = keras.Input(shape=image_shape, name="images")  # (batch, 32, 32, C) in [0, 1]
    inputs = [images]
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(images)  # (b, 16, 16, 32)
    h = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 8, 8, 64)
    h = _with_label(layers.Flatten()(h), num_classes, inputs)
    if hidden:
        h = layers.Dense(hidden, activation="relu")(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(_inputs(inputs), [z_mean, z_log_var], name="encoder")


# The factorised decoders' last convolution, which computes the distribution parameters. Under
# mixed_bfloat16 it computes in bf16 where the observation model allows (``float32_layers``), and
# the float32 layer "logits" after it casts its output up: decoders return float32 parameters
# whatever the precision.
OUTPUT_LAYER = "output_conv"


def as_float32(params):
    """``params`` through the float32 identity layer "logits": the decoder's output, in float32 under any precision."""
    return layers.Identity(name="logits", dtype="float32")(params)


def build_conv_decoder(image_shape=(32, 32, 1), latent_dim=2, out_channels=None, pad=PAD, num_classes=0):
    """The seed's decoder (the keras-io example's widths): Dense 8*8*64 -> two stride-2 transposed convolutions -> distribution parameters.

    ``out_channels`` (default: the image's channels, one Bernoulli logit each) is what the
    likelihood asks for (``Likelihood.parameter_channels``). Factorised decoders ignore ``pad``:
    they decode the padding too, and the loss crops it. With ``num_classes`` the one-hot label
    joins z: p(x | z, y).
    """
    height, width, channels = image_shape
    if height % 4 or width % 4:
        raise ValueError(f"image side must be a multiple of 4 for two stride-2 layers, got {image_shape}")
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs = [z]
    h = layers.Dense((height // 4) * (width // 4) * 64, activation="relu")(_with_label(z, num_classes, inputs))
    h = layers.Reshape((height // 4, width // 4, 64))(h)  # (b, 8, 8, 64)
    h = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 16, 16, 64)
    h = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)  # (b, 32, 32, 32)
    # No sigmoid: the decoder returns distribution parameters (Bernoulli logits); the
    # observation model turns them into images.
    params = layers.Conv2DTranspose(out_channels or channels, 3, padding="same", name=OUTPUT_LAYER)(h)  # (b, 32, 32, P)
    return keras.Model(_inputs(inputs), as_float32(params), name="decoder")


def build_conv_encoder(image_shape=(32, 32, 1), latent_dim=2, num_classes=0):
    """The keras-io encoder without its 16-unit ReLU bottleneck: (z_mean, z_log_var) from all 8x8x64 features.

    Why: in the keras-io layout most of the 16 units die (12-14 of them on the test set after 30
    epochs), and z_mean becomes an affine function of the few left, so the 2-D latent scatter lies
    on lines. Without them the test loss after 2 epochs was 163.6 against the keras-io layout's 187.9
    (BENCHMARKS.md).
    """
    return build_keras_io_encoder(image_shape, latent_dim, num_classes, hidden=0)


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


def build_resnet_encoder(image_shape=(32, 32, 1), latent_dim=32, num_classes=0):
    """Seed-like convolutions plus a residual block, with no 16-unit bottleneck before the posterior.

    With ``num_classes`` the one-hot label joins the flattened features: q(z | x, y).
    """
    images = keras.Input(shape=image_shape, name="images")  # (batch, 32, 32, c)
    inputs = [images]
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(images)  # (b, 16, 16, 32)
    h = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 8, 8, 64)
    h = _residual(h, 64)
    h = layers.Flatten()(h)  # (b, 4096) straight to the posterior, so 32-64 latents are not starved
    h = _with_label(h, num_classes, inputs)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(_inputs(inputs), [z_mean, z_log_var], name="encoder")


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


def build_resnet_decoder(image_shape=(32, 32, 1), latent_dim=32, out_channels=None, pad=PAD, num_classes=0):
    """Residual decoder of a factorised likelihood: z [, label] -> (b, 32, 32, out_channels) parameters (default: c logits)."""
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs = [z]
    out_channels = out_channels or image_shape[-1]
    features = _resnet_features(_with_label(z, num_classes, inputs), image_shape)
    params = layers.Conv2D(out_channels, 3, padding="same", name=OUTPUT_LAYER)(features)
    return keras.Model(_inputs(inputs), as_float32(params), name="decoder")


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


def build_resnet_ar_decoder(image_shape=(32, 32, 1), latent_dim=32, out_channels=None, pad=PAD, num_classes=0,
                            pixel_layers=2):
    """Residual decoder with an autoregressive (PixelCNN-style) output: [z, images] -> logits.

    The latent carries global shape; the causal head models what a factorised Bernoulli cannot,
    the dependence between neighbouring pixels (as in PixelVAE, Gulrajani et al., 2017). The head
    runs on the 28x28 pixels that are scored; the padding's logits are 0 and never used.
    Inputs in the order ``VAE.decoder_inputs`` gives them. ``pixel_layers``: the head's masked
    3x3 layers after its first (``build_pixel_head``'s ``layers_b``).
    """
    if out_channels not in (None, image_shape[-1]):
        raise ValueError(f"the autoregressive head returns one logit per channel, not {out_channels} parameters")
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs = [z]
    z_and_label = _with_label(z, num_classes, inputs)
    images = keras.Input(shape=image_shape, name="images")  # (b, 32, 32, c) the pixels being modelled
    inputs.append(images)
    features = layers.Cropping2D(pad, name="features")(_resnet_features(z_and_label, image_shape))  # (b, 28, 28, 32)
    context = layers.Cropping2D(pad)(images)  # (b, 28, 28, c)
    # Spatial sides left open so a sampler can run the head on the few rows a pixel depends on.
    head = build_pixel_head((None, None, features.shape[-1]), image_shape[-1], layers_b=pixel_layers)
    logits = layers.ZeroPadding2D(pad, name="logits")(head([features, context]))  # (b, 32, 32, c)
    return keras.Model(inputs, logits, name="decoder")


def rows_seen_above(head):
    """How many rows above a pixel the causal ``head`` reads: the sum of its masked kernels' half-heights."""
    return sum(layer.kernel_size[0] // 2 for layer in head.layers if isinstance(layer, MaskedConv2D))


def columns_seen_beside(head):
    """How many columns to either side of a pixel the causal ``head`` reads: the sum of its kernels' half-widths.

    Its other layers are pointwise (adds, ReLUs, the 1x1 output), so they widen nothing.
    """
    return sum(layer.kernel_size[1] // 2 for layer in head.layers if isinstance(layer, layers.Conv2D))


def autoregressive_parts(decoder):
    """(z [, label] -> features model, causal head) of a ``build_resnet_ar_decoder`` decoder, for pixel-by-pixel sampling."""
    latent_inputs = _inputs(decoder.inputs[:-1])  # all but the image, which comes last
    return keras.Model(latent_inputs, decoder.get_layer("features").output), decoder.get_layer("pixel_head")


def pixel_head_stages(head):
    """(image_stage, rest) of a ``build_pixel_head`` head: ``head([features, image])`` equals
    ``rest(features + image_stage(image))``.

    ``image_stage`` is the first, mask-A convolution, the head's one layer that reads the image and
    not z; ``rest`` is everything after the sum. So K latent draws of one image need the image
    stage once, not K times.
    """
    masked = [layer for layer in head.layers if isinstance(layer, MaskedConv2D)]
    image_stage, blocks, output = masked[0], masked[1:], head.get_layer("head_logits")

    def rest(h):
        h = ops.relu(h)
        for block in blocks:
            h = ops.relu(ops.add(h, block(h)))
        return output(h)

    return image_stage, rest


class AutoregressiveScorer:
    """The logits of an autoregressive decoder for K latent draws per image, its image-only part once per image.

    ``scorer(latent_inputs, images, k)``: ``latent_inputs`` are the decoder's z [, labels] for K*B
    draws, copy-major (draw j of image b at row j*B + b); ``images`` (B, H, W, C) once each. Equals
    ``decoder([*latent_inputs, images repeated K times])`` (``tests/test_evaluate.py``), without
    the K copies of the images or K runs of the head's first convolution on them.
    """

    def __init__(self, decoder, pad=PAD):
        self.features, head = autoregressive_parts(decoder)
        self.image_stage, self.rest = pixel_head_stages(head)
        self.crop = layers.Cropping2D(pad)
        self.uncrop = decoder.get_layer("logits")  # the zero border of unscored padding

    def __call__(self, latent_inputs, images, k):
        features = self.features(latent_inputs, training=False)  # (K*B, h, w, F)
        shape = features.shape
        stage = ops.cast(self.image_stage(self.crop(images)), features.dtype)  # (B, h, w, F)
        summed = ops.reshape(ops.reshape(features, (k, -1, *shape[1:])) + stage[None], (-1, *shape[1:]))
        return self.uncrop(self.rest(summed))  # (K*B, H, W, C)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An encoder/decoder pair and the kind of observation model its decoder can parameterise."""

    build_encoder: typing.Callable
    build_decoder: typing.Callable
    autoregressive: bool = False  # the decoder reads the image (a causal head): only autoregressive likelihoods

    def supports(self, likelihood):
        """Whether this decoder can return ``likelihood``'s parameters (a ``LIKELIHOODS`` name)."""
        return get_likelihood(likelihood).autoregressive == self.autoregressive


# architecture name -> builders; new ones register here.
ARCHITECTURES = {
    # The keras-io example's layout, which the seed copied (Dense 16 bottleneck, its widths): kept
    # under the name of where it comes from, so throughput is compared with it layer for layer.
    "keras_io": Architecture(build_keras_io_encoder, build_conv_decoder),
    # The same decoder behind an encoder without the dead-unit bottleneck: the seed's description.
    "conv": Architecture(build_conv_encoder, build_conv_decoder),
    "resnet": Architecture(build_resnet_encoder, build_resnet_decoder),
    "resnet_ar": Architecture(build_resnet_encoder, build_resnet_ar_decoder, autoregressive=True),
}


# Compute precisions by name (Keras dtype policies). Weights and optimizer state are float32 in both.
PRECISIONS = ("float32", "mixed_bfloat16")
# Layers kept in float32 whatever the precision: the posterior's parameters and the decoder's
# output feed the loss's sums over latents and 784 pixels, which bf16's 8-bit mantissa would
# round coarsely. "logits" is the float32 cast after a factorised decoder's last convolution.
FLOAT32_LAYERS = frozenset({"z_mean", "z_log_var", "logits", "head_logits"})


def float32_layers(likelihood=None):
    """The layer names kept in float32 for a model of ``likelihood`` (name; None: assume nothing).

    A Bernoulli logit tolerates bf16's rounding (2**-8 relative; seed 0 of the default recipe ended
    0.19 nats from float32's test loss, BENCHMARKS.md), and its convolution in bf16 made the bf16
    train step 1.13x faster on an AVX512_BF16 CPU; a logistic
    mixture's locations resolve bins 2/255 wide, so its last convolution stays float32
    (``bf16_parameters`` of the observation model).
    """
    if likelihood is not None and get_likelihood(likelihood).bf16_parameters:
        return FLOAT32_LAYERS
    return FLOAT32_LAYERS | {OUTPUT_LAYER}


def set_precision(model, precision):
    """Give every layer inside ``model`` the ``precision`` compute policy (output layers stay float32); returns ``model``.

    Takes effect on the next call or trace, so set it before building or compiling; the layers'
    policies are saved with the model.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    keep = float32_layers(getattr(model, "likelihood", None))
    for layer in _inner_layers(model):
        # Sub-models and the input/sampling layers pass float32 tensors through unchanged;
        # only layers that compute get the mixed policy (each casts its own inputs).
        if isinstance(layer, (keras.Model, layers.InputLayer, Sampling)):
            continue
        layer.dtype_policy = "float32" if layer.name in keep else precision
    # Compiled predict and test functions keep the policies they were traced with (the plots after
    # a bf16 training would be drawn in bf16): make them anew, traced on their next call.
    for sub in [model, *(layer for layer in _inner_layers(model) if isinstance(layer, keras.Model))]:
        sub.make_predict_function(force=True)
        sub.make_test_function(force=True)
    return model


def _inner_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _inner_layers(layer)


def default_likelihood(architecture, channels=1):
    """The observation model an architecture uses when none is named: its head's, else by channel count."""
    if ARCHITECTURES[architecture].autoregressive:
        return "bernoulli_ar"
    return "bernoulli" if channels == 1 else "logistic_mixture"


def build_vae(image_shape=(32, 32, 1), latent_dim=2, architecture="keras_io", seed=None, beta=1.0, precision="float32",
              likelihood=None, pad=PAD, kl_warmup=0, free_bits=0.0, num_classes=0, pixel_layers=None):
    """Build a VAE of the named architecture, observation model and ``precision``, variables created, ready to compile.

    ``likelihood`` defaults to ``default_likelihood``; ``pad`` is the zero border of
    ``image_shape`` that is not scored (``observation.Geometry.pad``); ``num_classes`` > 0 makes
    a conditional VAE (the one-hot label enters encoder and decoder); ``pixel_layers`` sets an
    autoregressive decoder's head depth (None: its builder's default).
    """
    try:
        arch = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}"
        ) from None
    likelihood = likelihood or default_likelihood(architecture, image_shape[-1])
    model = get_likelihood(likelihood)
    if not arch.supports(likelihood) or model.check(image_shape[-1]):
        raise ValueError(f"architecture {architecture!r} with likelihood {likelihood!r} on {image_shape} images: "
                         f"{model.check(image_shape[-1]) or 'the decoder cannot return its parameters'}")
    encoder = arch.build_encoder(image_shape, latent_dim, num_classes=num_classes)
    if pixel_layers is not None and not arch.autoregressive:
        raise ValueError(f"architecture {architecture!r} has no causal head for pixel_layers={pixel_layers}")
    head = {} if pixel_layers is None else {"pixel_layers": pixel_layers}
    decoder = arch.build_decoder(image_shape, latent_dim, model.parameter_channels(image_shape[-1]), pad,
                                 num_classes=num_classes, **head)
    vae = VAE(encoder, decoder, seed=seed, beta=beta, likelihood=likelihood, pad=pad, kl_warmup=kl_warmup,
              free_bits=free_bits, num_classes=num_classes)
    vae = set_precision(vae, precision)
    vae(vae.model_inputs(ops.zeros((1, *image_shape)), ops.zeros((1,), "int32")))  # create every variable now
    return vae


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """Encoder -> Sampling -> decoder; ``fit`` minimises the negative ELBO in nats per image.

    ``call`` returns a dict: ``logits`` (batch, H, W, P), the distribution parameters of the
    observation model ``likelihood`` (a name in ``observation.LIKELIHOODS``, for Bernoulli
    pixels logits), and ``z_mean`` and ``z_log_var`` (batch, latent_dim). The model's kind is
    these properties, saved with it: ``likelihood`` says whether the decoder reads the image.
    """

    def __init__(self, encoder, decoder, seed=None, beta=1.0, likelihood="bernoulli", pad=PAD, kl_warmup=0,
                 free_bits=0.0, num_classes=0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.seed = seed
        # The training objective's KL control (losses.kl_weight, losses.free_bits_kl); reported
        # losses are always the unweighted negative ELBO.
        self.beta = float(beta)
        self.kl_warmup = int(kl_warmup)
        self.free_bits = float(free_bits)
        # Batches per epoch, which turns the optimizer's step counter into the warm-up's epoch.
        # Set by whoever trains with a warm-up (train.py); not part of the saved model.
        self.steps_per_epoch = None
        # Whether it trains under tf.distribute with several workers (train.py sets it; see train_step).
        self.multi_worker = False
        self.likelihood = get_likelihood(likelihood).name
        self.pad = int(pad)
        self.num_classes = int(num_classes)  # > 0: a conditional VAE, labels one-hot into encoder and decoder
        self.sampling = Sampling(seed=seed, name="sampling")
        # Per-image means (the trackers are updated with (batch,) vectors), so a partial last
        # batch is weighted by its size, as Keras does for the total ``loss``.
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        # The unweighted negative ELBO: what the best checkpoint is chosen on, whatever beta,
        # warm-up or free bits shape the training loss.
        self.negative_elbo_tracker = keras.metrics.Mean(name="negative_elbo")

    @property
    def latent_dim(self):
        """Number of latent dimensions."""
        return self.decoder.inputs[0].shape[-1]  # z is the decoder's first input in every kind

    @property
    def image_shape(self):
        """(height, width, channels) of the padded images the model takes."""
        return tuple(self.encoder.inputs[0].shape[1:])  # the images are the encoder's first input

    @property
    def geometry(self):
        """The ``observation.Geometry`` of the images: scored side and channels, and the padding around them."""
        padded, _, channels = self.image_shape
        return Geometry(side=padded - 2 * self.pad, channels=channels, pad=self.pad)

    @property
    def observation(self):
        """The observation model (``observation.LIKELIHOODS[self.likelihood]``)."""
        return get_likelihood(self.likelihood)

    @property
    def autoregressive(self):
        """Whether the decoder reads the image beside z (pixel i conditioned on the pixels before it)."""
        return self.observation.autoregressive

    @property
    def conditional(self):
        """Whether encoder and decoder read the one-hot class label."""
        return self.num_classes > 0

    def one_hot(self, labels):
        """Integer labels (n,) -> float32 one-hot (n, num_classes)."""
        return ops.one_hot(ops.convert_to_tensor(labels, "int32"), self.num_classes)

    def model_inputs(self, images, labels=None):
        """What ``call`` takes: the images, or for a conditional model {"images", "labels" (one-hot)}."""
        if not self.conditional:
            return images
        if labels is None:
            raise ValueError("a conditional VAE needs the class labels of its images")
        return {"images": images, "labels": self.one_hot(labels)}

    def encoder_inputs(self, images, labels=None):
        """The encoder's inputs in its order: the images, then a conditional model's one-hot labels."""
        return [images, labels] if self.conditional else images

    def decoder_inputs(self, z, images=None, labels=None, with_images=True):
        """The decoder's inputs in its order: z, a conditional model's one-hot labels, an autoregressive one's images.

        ``with_images=False``: only the latent ones (an ``AutoregressiveScorer``'s first argument).
        """
        inputs = [z]
        if self.conditional:
            if labels is None:
                raise ValueError("a conditional VAE's decoder needs the one-hot labels to decode")
            inputs.append(labels)
        if self.autoregressive and with_images:
            if images is None:
                raise ValueError("an autoregressive decoder needs the images it models (or a sampler)")
            inputs.append(images)
        return inputs[0] if len(inputs) == 1 else inputs

    def call(self, inputs, training=False):
        """Encode, sample one z per image, decode. ``inputs``: see ``model_inputs``."""
        images, labels = (inputs["images"], inputs["labels"]) if self.conditional else (inputs, None)
        z_mean, z_log_var = self.encoder(self.encoder_inputs(images, labels), training=training)
        z = self.sampling([z_mean, z_log_var])
        logits = self.decoder(self.decoder_inputs(z, images, labels), training=training)
        return {"logits": logits, "z_mean": z_mean, "z_log_var": z_log_var}

    def loss_terms(self, x, y_pred, beta=1.0):
        """Per-image ``loss`` (reconstruction + ``beta`` KL), ``reconstruction_loss`` and ``kl_loss`` under this model's likelihood."""
        return losses.vae_loss(x, y_pred["logits"], y_pred["z_mean"], y_pred["z_log_var"], beta=beta,
                               pad=self.pad, likelihood=self.likelihood)

    def kl_weight(self):
        """This step's KL weight: ``beta``, warmed up over the first ``kl_warmup`` epochs of the optimizer's steps."""
        if self.kl_warmup <= 0:
            return self.beta
        if not self.steps_per_epoch or self.optimizer is None:
            raise ValueError("a KL warm-up counts epochs in optimizer steps: set vae.steps_per_epoch and compile")
        epoch = ops.floor_divide(self.optimizer.iterations, self.steps_per_epoch)
        return losses.kl_weight(epoch, self.beta, self.kl_warmup)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The training objective, averaged over the batch; also updates the named term trackers.

        With beta 1, no warm-up and no free bits, it is the mean negative ELBO.
        """
        weight = self.kl_weight()
        target = x if y is None else y
        terms = self.loss_terms(target["images"] if self.conditional else target, y_pred, beta=weight)
        self.reconstruction_loss_tracker.update_state(terms["reconstruction_loss"])
        self.kl_loss_tracker.update_state(terms["kl_loss"])
        self.negative_elbo_tracker.update_state(terms["reconstruction_loss"] + terms["kl_loss"])
        if self.free_bits > 0:
            kl_dims = losses.kl_per_dimension(y_pred["z_mean"], y_pred["z_log_var"])
            loss = ops.mean(terms["reconstruction_loss"]) + weight * losses.free_bits_kl(kl_dims, self.free_bits)
        else:
            loss = ops.mean(terms["loss"])
        return replica_mean(loss)

    def build_for_training(self):
        """Create every variable ``fit`` would (the model's and the compiled optimizer's) from symbolic inputs.

        For tf.distribute's multi-worker strategy: Keras 3's TensorFlow trainer, before its own
        symbolic build, reduces a whole input batch with ``strategy.reduce``, which takes one value
        and fails on the (images,) tuple of per-worker values (keras-team/keras#20585). Built here,
        nothing is left for that step, so ``_maybe_symbolic_build`` below skips it. Symbolic, so no
        noise is drawn. tests/test_distribute.py trains two workers through this.
        """
        images = keras.KerasTensor((None, *self.image_shape))
        inputs = {"images": images, "labels": keras.KerasTensor((None, self.num_classes))} if self.conditional else images
        self(inputs, training=False)
        self.optimizer.build(self.trainable_variables)
        self._built_for_training = True

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):  # Keras' TensorFlow trainer; see build_for_training
        if getattr(self, "_built_for_training", False):
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, *args, **kwargs):
        """Keras' step; under several tf.distribute workers its logs get the axis Keras averages them over.

        Keras 3's TensorFlow trainer averages a step's logs over workers with
        ``strategy.reduce("MEAN", value, axis=0)``, which fails on the scalar metric values
        (tensorflow/tensorflow#72388): as (1,) vectors they average to the scalars Keras expects.
        ``multi_worker`` is set by train.py; the epoch's logs are read from the metrics, summed
        over all workers, as always.
        """
        logs = super().train_step(*args, **kwargs)
        return self._with_worker_axis(logs) if self.multi_worker else logs

    def test_step(self, *args, **kwargs):
        """Keras' validation step; see ``train_step``."""
        logs = super().test_step(*args, **kwargs)
        return self._with_worker_axis(logs) if self.multi_worker else logs

    @staticmethod
    def _with_worker_axis(logs):
        return {name: ops.reshape(value, (1,)) for name, value in logs.items()}

    def get_config(self):
        """Everything needed to rebuild the model, sub-models included."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "seed": self.seed,
            "beta": self.beta,
            "likelihood": self.likelihood,
            "pad": self.pad,
            "kl_warmup": self.kl_warmup,
            "free_bits": self.free_bits,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_config(cls, config):
        """Inverse of ``get_config``."""
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        if "likelihood" not in config:  # a file this version did not write: its decoder's meaning is unknown
            raise ValueError("the model's config names no likelihood; re-train it with this version")
        return cls(**config)
