"""Which layers of a model compute in which precision (Keras dtype policies)."""

import keras
from keras import layers

from mnist_vae.models.layers import OUTPUT_LAYER, Sampling
from mnist_vae.observation import get_likelihood
from mnist_vae.precision import PRECISIONS

# Layers kept in float32 whatever the precision: the posterior's parameters and the decoder's
# output feed the loss's sums over latents and 784 pixels, which bf16's 8-bit mantissa would
# round coarsely. "params" is the float32 cast after a factorised decoder's last convolution.
FLOAT32_LAYERS = frozenset({"z_mean", "z_log_var", "params", "head_params"})


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
    for sub in [model, *inner_layers(model)]:
        if hasattr(sub, "precision"):
            sub.precision = precision  # a VAE and its encoder and decoder save it in their configs
    for layer in inner_layers(model):
        # Sub-models and the input/sampling layers pass float32 tensors through unchanged;
        # only layers that compute get the mixed policy (each casts its own inputs).
        if isinstance(layer, (keras.Model, layers.InputLayer, Sampling)):
            continue
        layer.dtype_policy = "float32" if layer.name in keep else precision
    # Compiled predict and test functions keep the policies they were traced with (the plots after
    # a bf16 training would be drawn in bf16): make them anew, traced on their next call.
    for sub in [model, *(layer for layer in inner_layers(model) if isinstance(layer, keras.Model))]:
        sub.make_predict_function(force=True)
        sub.make_test_function(force=True)
    return model


def inner_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from inner_layers(layer)
