"""The seed's convolutional encoder and decoder, and the keras-io example's encoder they grew from."""

import keras
from keras import layers

from mnist_vae.models.layers import OUTPUT_LAYER, as_float32, with_label
from mnist_vae.observation import PAD


def build_keras_io_encoder(image_shape=(32, 32, 1), latent_dim=2, num_classes=0, hidden=16):
    """The keras-io VAE example's encoder (the seed's first layout): two stride-2 convolutions -> Dense ``hidden`` (ReLU) -> (z_mean, z_log_var).

    ``hidden=0`` leaves the Dense layer out (``build_conv_encoder``). With ``num_classes``, the
    one-hot label (input ``labels``) joins the flattened features before the Dense layer: q(z | x, y).
    """
    images = keras.Input(shape=image_shape, name="images")  # (batch, 32, 32, C) in [0, 1]
    inputs = {"images": images}
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(images)  # (b, 16, 16, 32)
    h = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 8, 8, 64)
    h = with_label(layers.Flatten()(h), num_classes, inputs)
    if hidden:
        h = layers.Dense(hidden, activation="relu")(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


# The factorised decoders' last convolution, which computes the distribution parameters. Under
# mixed_bfloat16 it computes in bf16 where the observation model allows (``float32_layers``), and


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
    inputs = {"z": z}
    h = layers.Dense((height // 4) * (width // 4) * 64, activation="relu")(with_label(z, num_classes, inputs))
    h = layers.Reshape((height // 4, width // 4, 64))(h)  # (b, 8, 8, 64)
    h = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 16, 16, 64)
    h = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)  # (b, 32, 32, 32)
    # No sigmoid: the decoder returns distribution parameters (Bernoulli logits); the
    # observation model turns them into images.
    params = layers.Conv2DTranspose(out_channels or channels, 3, padding="same", name=OUTPUT_LAYER)(h)  # (b, 32, 32, P)
    return keras.Model(inputs, as_float32(params), name="decoder")


def build_conv_encoder(image_shape=(32, 32, 1), latent_dim=2, num_classes=0):
    """The keras-io encoder without its 16-unit ReLU bottleneck: (z_mean, z_log_var) from all 8x8x64 features.

    Why: in the keras-io layout most of the 16 units die (12-14 of them on the test set after 30
    epochs), and z_mean becomes an affine function of the few left, so the 2-D latent scatter lies
    on lines. Without them the test loss after 2 epochs was 163.6 against the keras-io layout's 187.9
    (BENCHMARKS.md).
    """
    return build_keras_io_encoder(image_shape, latent_dim, num_classes, hidden=0)

