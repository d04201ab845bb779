"""Architectures by name, and the ``ModelConfig`` that says which one a model is: the one thing that builds its parts.

Adding an architecture is one ``ARCHITECTURES`` entry (its builders in a module of their own).
"""

import dataclasses
import typing

import keras

from mnist_vae.models import autoregressive, conv, resnet
from mnist_vae.models.layers import PACKAGE
from mnist_vae.models.precision import set_precision
from mnist_vae.observation import DEFAULT_LIKELIHOOD, PAD, Geometry, get_likelihood
from mnist_vae.observation import default_likelihood as observation_default


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An encoder/decoder pair and the kind of observation model its decoder can parameterise.

    ``build_encoder(image_shape, latent_dim, num_classes=)`` returns a model of the images
    [, one-hot labels] -> (z_mean, z_log_var); ``build_decoder(image_shape, latent_dim,
    out_channels, pad, num_classes=)`` a model of z [, labels] [, images] -> the observation
    model's parameters (batch, H, W, out_channels).
    """

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
    "keras_io": Architecture(conv.build_keras_io_encoder, conv.build_conv_decoder),
    # The same decoder behind an encoder without the dead-unit bottleneck: the seed's description.
    "conv": Architecture(conv.build_conv_encoder, conv.build_conv_decoder),
    "resnet": Architecture(resnet.build_resnet_encoder, resnet.build_resnet_decoder),
    "resnet_ar": Architecture(resnet.build_resnet_encoder, autoregressive.build_resnet_ar_decoder,
                              autoregressive=True),
}


def get_architecture(name):
    """The registered architecture called ``name``, or a ``ValueError`` listing the choices."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}") from None


def default_likelihood(architecture, channels=1):
    """The observation model an architecture uses when none is named (``observation.default_likelihood``)."""
    return observation_default(get_architecture(architecture).autoregressive, channels)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What a model is: saved inside its ``.keras`` file, and what ``build_parts`` builds it from."""

    architecture: str = "keras_io"  # an ARCHITECTURES name
    likelihood: str = DEFAULT_LIKELIHOOD  # an observation.LIKELIHOODS name
    latent_dim: int = 2
    pixel_layers: int | None = None  # an autoregressive decoder's head depth (None: its builder's default)
    num_classes: int = 0  # > 0: a conditional VAE (the one-hot label enters encoder and decoder)
    image_shape: tuple = (32, 32, 1)  # the padded images the model takes
    pad: int = PAD  # their zero border, which is not scored (observation.Geometry.pad)

    @property
    def geometry(self):
        """The ``observation.Geometry``: scored side and channels, and the padding around them."""
        padded, _, channels = self.image_shape
        return Geometry(side=padded - 2 * self.pad, channels=channels, pad=self.pad)

    @property
    def observation(self):
        """The observation model (``observation.LIKELIHOODS[likelihood]``)."""
        return get_likelihood(self.likelihood)

    @property
    def autoregressive(self):
        """Whether the decoder reads the image beside z (pixel i conditioned on the pixels before it)."""
        return self.observation.autoregressive

    @property
    def conditional(self):
        """Whether encoder and decoder read the one-hot class label."""
        return self.num_classes > 0

    def to_dict(self):
        """JSON-able fields."""
        return {**dataclasses.asdict(self), "image_shape": list(self.image_shape)}

    @classmethod
    def from_dict(cls, values):
        """Inverse of ``to_dict``; every field must be there (a missing likelihood is never guessed)."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing, unknown = [n for n in names if n not in values], sorted(set(values) - set(names))
        if missing or unknown:
            what = f"names no {missing[0]}" if missing else f"has unknown fields {unknown}"
            raise ValueError(f"the model's config {what}; re-train it with this version")
        return cls(**{**values, "image_shape": tuple(values["image_shape"])})


def build_parts(config):
    """The (encoder, decoder) of a ``ModelConfig``, each a ``Part``; a ``ValueError`` names what does not fit together."""
    return Part(config, "encoder"), Part(config, "decoder")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Part(keras.Model):
    """The encoder or the decoder of a ``ModelConfig``, as its architecture's builder makes it.

    Its saved file (``encoder.keras``, ``decoder.keras``) holds the ``ModelConfig`` and which part,
    not a graph: loading builds it anew from them, as a ``VAE`` is, and reads the weights back. An
    autoregressive decoder's parts (``features``, ``pixel_head``, ``crop``, ``uncrop``) are its attributes.
    """

    def __init__(self, model, part, precision="float32", **kwargs):
        config = model if isinstance(model, ModelConfig) else ModelConfig.from_dict(model)
        built = _build(config, part)
        super().__init__(built.input, built.output, **{"name": built.name, **kwargs})
        self.config, self.part, self.likelihood = config, part, config.likelihood
        for name in getattr(built, "parts", ()):
            setattr(self, name, getattr(built, name))
        self.precision = precision  # its layers' compute policies (``models.precision.set_precision`` sets both)
        if precision != "float32":
            set_precision(self, precision)

    def get_config(self):
        """What rebuilds it: the ``ModelConfig``, the part's name and its compute precision."""
        return {"name": self.name, "model": self.config.to_dict(), "part": self.part, "precision": self.precision}

    @classmethod
    def from_config(cls, config):
        """Inverse of ``get_config``."""
        return cls(**config)


def _build(config, part):
    """The ``part`` ("encoder" or "decoder") of ``config`` from its architecture's builder, its named inputs checked."""
    arch = get_architecture(config.architecture)
    model, shape = get_likelihood(config.likelihood), config.image_shape
    if not arch.supports(config.likelihood) or model.check(shape[-1]):
        raise ValueError(f"architecture {config.architecture!r} with likelihood {config.likelihood!r} on {shape} "
                         f"images: {model.check(shape[-1]) or 'the decoder cannot return its parameters'}")
    if config.pixel_layers is not None and not arch.autoregressive:
        raise ValueError(f"architecture {config.architecture!r} has no causal head for "
                         f"pixel_layers={config.pixel_layers}")
    labels = {"labels"} if config.num_classes else set()
    if part == "encoder":
        built, names = arch.build_encoder(shape, config.latent_dim, num_classes=config.num_classes), {"images"} | labels
    else:
        head = {} if config.pixel_layers is None else {"pixel_layers": config.pixel_layers}
        built = arch.build_decoder(shape, config.latent_dim, model.parameter_channels(shape[-1]), config.pad,
                                   num_classes=config.num_classes, **head)
        names = {"z"} | labels | ({"images"} if arch.autoregressive else set())
    if not isinstance(built.input, dict) or set(built.input) != names:
        raise ValueError(f"architecture {config.architecture!r}: its {built.name} must take the named inputs "
                         f"{sorted(names)} (a dict), not {built.input}")
    return built
