"""Held-out evaluation of a trained VAE."""

from mnist_vae.data import ImageBatches


def evaluate_losses(vae, images, batch_size=128):
    """Mean negative ELBO and its terms over ``images`` (one posterior sample each), nats per image."""
    results = vae.evaluate(ImageBatches(images, batch_size), verbose=0, return_dict=True)
    return {name: float(results[name]) for name in ("loss", "reconstruction_loss", "kl_loss")}
