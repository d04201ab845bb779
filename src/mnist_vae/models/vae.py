"""The VAE: encoder -> sampling -> decoder, trained on the negative ELBO of its observation model.

It knows its ``ModelConfig`` (what rebuilds it) and, once compiled, its training objective (the
KL weight as a schedule of the step, free bits); nothing of files, data or distribution engines.
"""

import keras
from keras import ops

from mnist_vae import losses
from mnist_vae.models.architectures import ModelConfig, build_parts
from mnist_vae.models.layers import PACKAGE, Sampling
from mnist_vae.models.precision import set_precision


class _FromConfig:
    """A read-only attribute of a ``VAE`` that is its ``ModelConfig``'s attribute of the same name."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, vae, owner=None):
        return self if vae is None else getattr(vae.config, self.name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """Encoder -> Sampling -> decoder; ``fit`` minimises the negative ELBO in nats per image.

    ``call`` returns a dict: ``params`` (batch, H, W, P), the distribution parameters of the
    observation model ``likelihood`` (for Bernoulli pixels, logits), and ``z_mean`` and
    ``z_log_var`` (batch, latent_dim). What kind of model it is, its ``ModelConfig`` says.
    """

    def __init__(self, encoder, decoder, config, seed=None, precision="float32", **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.config = config  # the ModelConfig that built encoder and decoder (get_config saves it)
        self.seed = seed
        self.precision = precision  # the layers' compute policies (models.precision.set_precision sets both)
        self.sampling = Sampling(seed=seed, name="sampling")
        # The training objective's KL control, set by ``compile``; reported losses are always the
        # unweighted negative ELBO.
        self.kl_schedule = losses.KLSchedule()
        self.free_bits = 0.0
        # Per-image means (the trackers are updated with (batch,) vectors), so a partial last
        # batch is weighted by its size, as Keras does for the total ``loss``.
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        # The unweighted negative ELBO: what the best checkpoint is chosen on, whatever beta,
        # warm-up or free bits shape the training loss.
        self.negative_elbo_tracker = keras.metrics.Mean(name="negative_elbo")

    # What the model is: its ModelConfig's, read through (likelihood, latent_dim, num_classes,
    # image_shape, pad, geometry, and what they imply: observation, autoregressive, conditional).
    likelihood, latent_dim, num_classes, image_shape, pad, geometry = (_FromConfig() for _ in range(6))
    observation, autoregressive, conditional = (_FromConfig() for _ in range(3))

    def one_hot(self, labels):
        """Integer labels (n,) -> float32 one-hot (n, num_classes)."""
        return ops.one_hot(ops.convert_to_tensor(labels, "int32"), self.num_classes)

    def model_inputs(self, images, labels=None):
        """What ``call`` takes: {"images"} and, conditional, {"labels": one-hot} made from integer ``labels``."""
        return self.encoder_inputs(images, None if labels is None or not self.conditional else self.one_hot(labels))

    def encoder_inputs(self, images, labels=None):
        """The encoder's named inputs: {"images"} and, conditional, the one-hot {"labels"}."""
        return {"images": images, **self._labels(labels)}

    def decoder_inputs(self, z, images=None, labels=None, with_images=True):
        """The decoder's named inputs: {"z"}, a conditional model's one-hot {"labels"}, an autoregressive one's {"images"}.

        ``with_images=False``: only the latent ones (an ``AutoregressiveScorer``'s first argument).
        """
        inputs = {"z": z, **self._labels(labels)}
        if self.autoregressive and with_images:
            if images is None:
                raise ValueError("an autoregressive decoder needs the images it models (or a sampler)")
            inputs["images"] = images
        return inputs

    def _labels(self, labels):
        if not self.conditional:
            return {}
        if labels is None:
            raise ValueError("a conditional VAE needs the one-hot labels of its images")
        return {"labels": labels}

    def call(self, inputs, training=False):
        """Encode, sample one z per image, decode. ``inputs``: {"images"} [, {"labels"}] (``model_inputs``)."""
        images, labels = inputs["images"], inputs.get("labels")
        z_mean, z_log_var = self.encoder(self.encoder_inputs(images, labels), training=training)
        z = self.sampling([z_mean, z_log_var])
        params = self.decoder(self.decoder_inputs(z, images, labels), training=training)
        return {"params": params, "z_mean": z_mean, "z_log_var": z_log_var}

    def loss_terms(self, x, y_pred, beta=1.0):
        """Per-image ``loss`` (reconstruction + ``beta`` KL), ``reconstruction_loss`` and ``kl_loss`` under this model's likelihood."""
        return losses.vae_loss(x, y_pred["params"], y_pred["z_mean"], y_pred["z_log_var"], beta=beta,
                               pad=self.pad, likelihood=self.likelihood)

    def compile(self, optimizer="adam", kl_weight=1.0, free_bits=0.0, **kwargs):
        """Keras' ``compile``, plus the objective: ``kl_weight`` (a number, or a ``losses.KLSchedule`` of
        the optimizer's step) and ``free_bits`` (nats per latent dimension; 0: off)."""
        self.kl_schedule = kl_weight if isinstance(kl_weight, losses.KLSchedule) else losses.KLSchedule(kl_weight)
        self.free_bits = float(free_bits)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """What Keras does on loading (it skips models whose ``compile`` is overridden); the objective is not saved."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # so the saved optimizer state loads

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The training objective, averaged over the batch; also updates the named term trackers.

        With beta 1, no warm-up and no free bits, it is the mean negative ELBO.
        """
        weight = self.kl_schedule(self.optimizer.iterations if self.optimizer is not None else 0)
        target = x if y is None else y
        terms = self.loss_terms(target["images"], y_pred, beta=weight)
        self.reconstruction_loss_tracker.update_state(terms["reconstruction_loss"])
        self.kl_loss_tracker.update_state(terms["kl_loss"])
        self.negative_elbo_tracker.update_state(terms["reconstruction_loss"] + terms["kl_loss"])
        if self.free_bits > 0:
            kl_dims = losses.kl_per_dimension(y_pred["z_mean"], y_pred["z_log_var"])
            return ops.mean(terms["reconstruction_loss"]) + weight * losses.free_bits_kl(kl_dims, self.free_bits)
        return ops.mean(terms["loss"])

    def get_config(self):
        """The ``ModelConfig`` (what rebuilds encoder and decoder), the sampling seed and the compute precision."""
        return {"name": self.name, "trainable": self.trainable, "model": self.config.to_dict(), "seed": self.seed,
                "precision": self.precision}

    @classmethod
    def from_config(cls, config):
        """Inverse of ``get_config``: the encoder and decoder are built anew from the ``ModelConfig``."""
        config = dict(config)
        if "model" not in config:  # a file of another layout: what its decoder means is unknown
            raise ValueError("the model's config holds no model description; "
                             "re-train it with this version")
        model = ModelConfig.from_dict(config.pop("model"))
        return set_precision(cls(*build_parts(model), model, **config), config.get("precision", "float32"))
