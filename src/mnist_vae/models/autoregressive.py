"""The autoregressive decoder: resnet features of z plus a causal (PixelCNN-style) pixel head, and its parts.

The sampler and the importance-weighted scorer use the parts (``autoregressive_parts``,
``pixel_head_stages``) to run the head on the few rows a pixel depends on, or the image's stage
once for K latent draws.
"""

import keras
from keras import layers, ops

from mnist_vae.models.layers import MaskedConv2D, with_label
from mnist_vae.models.resnet import resnet_features
from mnist_vae.observation import PAD


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
    logits = layers.Conv2D(channels, 1, name="head_params")(h)
    return keras.Model({"features": features, "image": image}, logits, name="pixel_head")


def build_resnet_ar_decoder(image_shape=(32, 32, 1), latent_dim=32, out_channels=None, pad=PAD, num_classes=0,
                            pixel_layers=2):
    """Residual decoder with an autoregressive (PixelCNN-style) output: [z, images] -> logits.

    The latent carries global shape; the causal head models what a factorised Bernoulli cannot,
    the dependence between neighbouring pixels (as in PixelVAE, Gulrajani et al., 2017). The head
    runs on the 28x28 pixels that are scored; the padding's logits are 0 and never used.
    Named inputs ``z``, ``images`` and, conditional, ``labels`` (``VAE.decoder_inputs``). ``pixel_layers``: the head's masked
    3x3 layers after its first (``build_pixel_head``'s ``layers_b``).
    """
    if out_channels not in (None, image_shape[-1]):
        raise ValueError(f"the autoregressive head returns one logit per channel, not {out_channels} parameters")
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs = {"z": z}
    z_and_label = with_label(z, num_classes, inputs)
    images = keras.Input(shape=image_shape, name="images")  # (b, 32, 32, c) the pixels being modelled
    inputs["images"] = images
    features = layers.Cropping2D(pad, name="features")(resnet_features(z_and_label, image_shape))  # (b, 28, 28, 32)
    context = layers.Cropping2D(pad)(images)  # (b, 28, 28, c)
    # Spatial sides left open so a sampler can run the head on the few rows a pixel depends on.
    head = build_pixel_head((None, None, features.shape[-1]), image_shape[-1], layers_b=pixel_layers)
    params = layers.ZeroPadding2D(pad, name="params")(head({"features": features, "image": context}))  # (b, 32, 32, c) logits
    return keras.Model(inputs, params, name="decoder")


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
    latent_inputs = {name: tensor for name, tensor in decoder.input.items() if name != "images"}
    return keras.Model(latent_inputs, decoder.get_layer("features").output), decoder.get_layer("pixel_head")


def pixel_head_stages(head):
    """(image_stage, rest) of a ``build_pixel_head`` head: ``head({"features": f, "image": x})`` equals
    ``rest(f + image_stage(x))``.

    ``image_stage`` is the first, mask-A convolution, the head's one layer that reads the image and
    not z; ``rest`` is everything after the sum. So K latent draws of one image need the image
    stage once, not K times.
    """
    masked = [layer for layer in head.layers if isinstance(layer, MaskedConv2D)]
    image_stage, blocks, output = masked[0], masked[1:], head.get_layer("head_params")

    def rest(h):
        h = ops.relu(h)
        for block in blocks:
            h = ops.relu(ops.add(h, block(h)))
        return output(h)

    return image_stage, rest


class AutoregressiveScorer:
    """The logits of an autoregressive decoder for K latent draws per image, its image-only part once per image.

    ``scorer(latent_inputs, images, k)``: ``latent_inputs`` are the decoder's ``z`` [, ``labels``] for
    K*B draws, copy-major (draw j of image b at row j*B + b); ``images`` (B, H, W, C) once each. Equals
    ``decoder({**latent_inputs, "images": images repeated K times})`` (``tests/test_evaluate.py``), without
    the K copies of the images or K runs of the head's first convolution on them.
    """

    def __init__(self, decoder, pad=PAD):
        self.features, head = autoregressive_parts(decoder)
        self.image_stage, self.rest = pixel_head_stages(head)
        self.crop = layers.Cropping2D(pad)
        self.uncrop = decoder.get_layer("params")  # the zero border of unscored padding

    def __call__(self, latent_inputs, images, k):
        features = self.features(latent_inputs, training=False)  # (K*B, h, w, F)
        shape = features.shape
        stage = ops.cast(self.image_stage(self.crop(images)), features.dtype)  # (B, h, w, F)
        summed = ops.reshape(ops.reshape(features, (k, -1, *shape[1:])) + stage[None], (-1, *shape[1:]))
        return self.uncrop(self.rest(summed))  # (K*B, H, W, C)

