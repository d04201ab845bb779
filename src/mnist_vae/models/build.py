"""``build_vae``: a ``ModelConfig`` (or its fields), a seed and a precision make a VAE with its variables created."""

from keras import ops

from mnist_vae.models.architectures import ModelConfig, build_parts, default_likelihood
from mnist_vae.models.precision import set_precision
from mnist_vae.models.vae import VAE


def build_vae(config=None, *, seed=None, precision="float32", **fields):
    """Build the VAE that ``config`` (a ``ModelConfig``; else one of ``fields``) describes, in ``precision``.

    A ``likelihood`` left out or None is the architecture's default (``default_likelihood``).
    Variables are created here; compile it (with its objective) to train it.
    """
    if config is None:
        fields = dict(fields)
        if fields.get("likelihood") is None:
            shape = tuple(fields.get("image_shape", ModelConfig.image_shape))
            fields["likelihood"] = default_likelihood(fields.get("architecture", ModelConfig.architecture), shape[-1])
        if "image_shape" in fields:
            fields["image_shape"] = tuple(fields["image_shape"])
        config = ModelConfig(**fields)
    elif fields:
        raise TypeError("pass a ModelConfig or its fields, not both")
    vae = VAE(*build_parts(config), config, seed=seed)
    vae = set_precision(vae, precision)
    vae(vae.model_inputs(ops.zeros((1, *config.image_shape)), ops.zeros((1,), "int32")))  # create every variable now
    return vae
