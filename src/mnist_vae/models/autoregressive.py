"""The autoregressive decoder: resnet features of z plus a causal (PixelCNN-style) pixel head.

Both are Keras models whose parts are attributes: ``AutoregressiveDecoder.features`` (z [, label]
-> feature maps) and ``.pixel_head``; ``PixelHead.image_stage`` (its one layer that reads the
image) and ``.rest``. The sampler runs the head on the few rows a pixel depends on; the
importance-weighted scorer runs the image stage once for K latent draws. Each model is rebuilt
from its constructor's arguments (``get_config``), not from a saved graph.
"""

import keras
from keras import layers, ops

from mnist_vae.models.layers import PACKAGE, MaskedConv2D, with_label
from mnist_vae.models.resnet import resnet_features
from mnist_vae.observation import PAD


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelHead(keras.Model):
    """p(x_ij | x_<ij, z): causal convolutions over the image plus the decoder's features -> logits.

    Inputs {"features": (b, h, w, filters) from z, "image": (b, h, w, channels)}, any h and w;
    output logits (b, h, w, channels) where (i, j) depends on the image only through pixels
    before (i, j). ``layers_b``: masked 3x3 residual layers after the 7x7 mask-A first one.
    """

    def __init__(self, filters=32, channels=1, layers_b=2, **kwargs):
        if channels != 1:
            raise ValueError(f"the autoregressive head models single-channel images, got {channels} channels")
        features = keras.Input(shape=(None, None, filters), name="features")
        image = keras.Input(shape=(None, None, channels), name="image")
        image_stage = MaskedConv2D(filters, 7, mask_type="A")  # pixels strictly before (i, j)
        blocks = [MaskedConv2D(filters, 3, mask_type="B") for _ in range(layers_b)]
        to_params = layers.Conv2D(channels, 1, name="head_params")
        h = layers.ReLU()(layers.Add()([image_stage(image), features]))
        for block in blocks:
            h = layers.ReLU()(layers.Add()([h, block(h)]))
        super().__init__({"features": features, "image": image}, to_params(h), **kwargs)
        self.image_stage, self.blocks, self.to_params = image_stage, blocks, to_params
        self.filters, self.channels, self.layers_b = filters, channels, layers_b

    def rest(self, h):
        """Everything after ``features + image_stage(image)``: ``self(inputs)`` equals ``rest(features + image_stage(image))``.

        So K latent draws of one image need the image stage once, not K times.
        """
        h = ops.relu(h)
        for block in self.blocks:
            h = ops.relu(ops.add(h, block(h)))
        return self.to_params(h)

    def rows_seen_above(self):
        """How many rows above a pixel the head reads: the sum of its masked kernels' half-heights."""
        return sum(layer.kernel_size[0] // 2 for layer in [self.image_stage, *self.blocks])

    def columns_seen_beside(self):
        """How many columns to either side of a pixel the head reads: the sum of its kernels' half-widths.

        Its other layers are pointwise (adds, ReLUs, the 1x1 output), so they widen nothing.
        """
        return sum(layer.kernel_size[1] // 2 for layer in [self.image_stage, *self.blocks, self.to_params])

    def get_config(self):
        """The constructor's arguments: what rebuilds the head."""
        return {"name": self.name, "filters": self.filters, "channels": self.channels, "layers_b": self.layers_b}

    @classmethod
    def from_config(cls, config):
        """Inverse of ``get_config``."""
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AutoregressiveDecoder(keras.Model):
    """Residual decoder with an autoregressive (PixelCNN-style) output: {z [, labels], images} -> logits.

    The latent carries global shape; the causal head models what a factorised Bernoulli cannot,
    the dependence between neighbouring pixels (as in PixelVAE, Gulrajani et al., 2017). The head
    runs on the 28x28 pixels that are scored; the padding's logits are 0 and never used.
    ``features``: z [, labels] -> (b, 28, 28, 32); ``pixel_head``: a ``PixelHead`` with
    ``pixel_layers`` masked 3x3 layers after its first; ``crop`` and ``uncrop``: to the scored
    pixels and back (a zero border).
    """

    parts = ("features", "pixel_head", "crop", "uncrop")  # what a ``models.Part`` wrapping it exposes too

    def __init__(self, image_shape=(32, 32, 1), latent_dim=32, pad=PAD, num_classes=0, pixel_layers=2, **kwargs):
        image_shape = tuple(image_shape)
        z = keras.Input(shape=(latent_dim,), name="z")
        latent = {"z": z}
        z_and_label = with_label(z, num_classes, latent)
        features = keras.Model(latent, layers.Cropping2D(pad)(resnet_features(z_and_label, image_shape)),
                               name="features")  # (b, 28, 28, 32)
        pixel_head = PixelHead(features.output.shape[-1], image_shape[-1], pixel_layers, name="pixel_head")
        crop, uncrop = layers.Cropping2D(pad), layers.ZeroPadding2D(pad, name="params")
        inputs = {name: keras.Input(shape=tensor.shape[1:], name=name) for name, tensor in latent.items()}
        inputs["images"] = keras.Input(shape=image_shape, name="images")  # (b, 32, 32, c) the pixels being modelled
        latent_inputs = {name: tensor for name, tensor in inputs.items() if name != "images"}
        params = uncrop(pixel_head({"features": features(latent_inputs), "image": crop(inputs["images"])}))
        super().__init__(inputs, params, **kwargs)  # (b, 32, 32, c) logits
        self.features, self.pixel_head, self.crop, self.uncrop = features, pixel_head, crop, uncrop
        self.arguments = {"image_shape": list(image_shape), "latent_dim": latent_dim, "pad": pad,
                          "num_classes": num_classes, "pixel_layers": pixel_layers}

    def get_config(self):
        """The constructor's arguments (``ModelConfig``'s fields): what rebuilds the decoder."""
        return {"name": self.name, **self.arguments}

    @classmethod
    def from_config(cls, config):
        """Inverse of ``get_config``."""
        return cls(**config)


def build_resnet_ar_decoder(image_shape=(32, 32, 1), latent_dim=32, out_channels=None, pad=PAD, num_classes=0,
                            pixel_layers=2):
    """The ``resnet_ar`` architecture's decoder (``Architecture.build_decoder``): an ``AutoregressiveDecoder``.

    Named inputs ``z``, ``images`` and, conditional, ``labels`` (``VAE.decoder_inputs``).
    """
    if out_channels not in (None, image_shape[-1]):
        raise ValueError(f"the autoregressive head returns one logit per channel, not {out_channels} parameters")
    return AutoregressiveDecoder(image_shape, latent_dim, pad, num_classes, pixel_layers, name="decoder")


class AutoregressiveScorer:
    """The logits of an ``AutoregressiveDecoder`` for K latent draws per image, its image-only part once per image.

    ``scorer(latent_inputs, images, k)``: ``latent_inputs`` are the decoder's ``z`` [, ``labels``] for
    K*B draws, copy-major (draw j of image b at row j*B + b); ``images`` (B, H, W, C) once each. Equals
    ``decoder({**latent_inputs, "images": images repeated K times})`` (``tests/test_evaluate.py``), without
    the K copies of the images or K runs of the head's first convolution on them.
    """

    def __init__(self, decoder):
        self.features, self.crop, self.uncrop = decoder.features, decoder.crop, decoder.uncrop
        self.image_stage, self.rest = decoder.pixel_head.image_stage, decoder.pixel_head.rest

    def __call__(self, latent_inputs, images, k):
        features = self.features(latent_inputs, training=False)  # (K*B, h, w, F)
        shape = features.shape
        stage = ops.cast(self.image_stage(self.crop(images)), features.dtype)  # (B, h, w, F)
        summed = ops.reshape(ops.reshape(features, (k, -1, *shape[1:])) + stage[None], (-1, *shape[1:]))
        return self.uncrop(self.rest(summed))  # (K*B, H, W, C)
