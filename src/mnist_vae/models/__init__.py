"""Models: layers, architectures and their registry, the VAE, and building one from its ``ModelConfig``.

- ``layers``: the sampling layer, the causal convolution, the builders' helpers;
- ``conv``, ``resnet``, ``autoregressive``: the architectures' encoders and decoders;
- ``architectures``: ``ARCHITECTURES`` by name, the ``ModelConfig`` a model is built from, and its ``Part``s;
- ``vae``: the ``VAE`` itself; ``precision``: which layers compute in bf16; ``build``: ``build_vae``.
"""

from mnist_vae.models.architectures import (ARCHITECTURES, Architecture, ModelConfig, Part, build_parts,
                                            default_likelihood, get_architecture)
from mnist_vae.models.autoregressive import (AutoregressiveDecoder, AutoregressiveScorer, PixelHead,
                                             build_resnet_ar_decoder)
from mnist_vae.models.build import build_vae
from mnist_vae.models.conv import build_conv_decoder, build_conv_encoder, build_keras_io_encoder
from mnist_vae.models.layers import OUTPUT_LAYER, MaskedConv2D, Sampling
from mnist_vae.models.precision import FLOAT32_LAYERS, float32_layers, inner_layers, set_precision
from mnist_vae.models.resnet import build_resnet_decoder, build_resnet_encoder
from mnist_vae.models.vae import VAE
from mnist_vae.precision import PRECISIONS

__all__ = ["ARCHITECTURES", "Architecture", "AutoregressiveDecoder", "AutoregressiveScorer", "FLOAT32_LAYERS",
           "MaskedConv2D", "ModelConfig", "OUTPUT_LAYER", "PRECISIONS", "Part", "PixelHead", "Sampling", "VAE",
           "build_conv_decoder", "build_conv_encoder", "build_keras_io_encoder", "build_parts",
           "build_resnet_ar_decoder", "build_resnet_decoder", "build_resnet_encoder", "build_vae",
           "default_likelihood", "float32_layers", "get_architecture", "inner_layers", "set_precision"]
