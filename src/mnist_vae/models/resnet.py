"""Residual encoder and factorised decoder: no bottleneck before the posterior, so 32-64 latents are not starved."""

import keras
from keras import layers

from mnist_vae.models.layers import OUTPUT_LAYER, as_float32, with_label
from mnist_vae.observation import PAD


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
    inputs = {"images": images}
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(images)  # (b, 16, 16, 32)
    h = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)  # (b, 8, 8, 64)
    h = _residual(h, 64)
    h = layers.Flatten()(h)  # (b, 4096) straight to the posterior, so 32-64 latents are not starved
    h = with_label(h, num_classes, inputs)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


def resnet_features(z, image_shape):
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
    inputs = {"z": z}
    out_channels = out_channels or image_shape[-1]
    features = resnet_features(with_label(z, num_classes, inputs), image_shape)
    params = layers.Conv2D(out_channels, 3, padding="same", name=OUTPUT_LAYER)(features)
    return keras.Model(inputs, as_float32(params), name="decoder")
