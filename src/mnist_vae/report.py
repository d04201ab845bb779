"""Render a run's pictures to PNG files: the only place figures meet the file system."""

import dataclasses

import numpy as np

from mnist_vae import inference, plots
from mnist_vae.data import held_out_images
from mnist_vae.errors import UserError
from mnist_vae.rundir import RunDir, load_inference_model, locked, replace_atomically

# Free space ``write_plots`` asks for: the four PNGs take well under 1 MB at the largest grid.
PLOT_BYTES = 10_000_000


def build_figures(vae, test, class_names, seed=0, grid_size=20, dims=(0, 1), n_examples=10):
    """Figures of a trained model: name -> Figure (the manifold only for latent_dim >= 2)."""
    latent_dim = vae.latent_dim
    z_mean, _ = inference.encode(vae, test.images)
    if latent_dim == 2:
        points, axis_labels, title = z_mean, ("z[0]", "z[1]"), "Latent space: posterior means (test set)"
    elif latent_dim > 2:
        points, ratios = inference.principal_components(z_mean)
        axis_labels = tuple(f"PC{i + 1} ({r:.0%} of variance)" for i, r in enumerate(ratios))
        title = f"Latent space: first two principal components of {latent_dim}-D posterior means (test set)"
    else:
        points, axis_labels, title = z_mean, ("z[0]", ""), "Latent space: posterior means (test set)"
    figures = {"latent_scatter.png": plots.latent_scatter(points, test.labels, class_names, title, axis_labels)}
    if latent_dim >= 2:
        z, values = inference.manifold_latents(grid_size, latent_dim, dims)
        extra = "" if latent_dim == 2 else f" (other {latent_dim - 2} dimensions at 0)"
        figures["manifold.png"] = plots.manifold_grid(
            inference.decode(vae, z, seed=seed), values, f"Decoded latent grid at Normal quantiles{extra}",
            (f"z[{dims[0]}]", f"z[{dims[1]}]"),
        )
    # The first test image of each class, so every class appears once.
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in np.unique(test.labels)][:n_examples]
    originals = test.images[picks]
    figures["reconstructions.png"] = plots.reconstructions(
        vae.geometry.from_model_input(originals), inference.reconstruct(vae, originals, seed=seed)
    )
    noise = inference.prior_noise(100, latent_dim, seed)
    figures["samples.png"] = plots.samples(inference.decode(vae, noise, seed=seed), cols=10)
    return figures


def write_plots(run, vae, test, class_names, config, dims=(0, 1), grid_size=None):
    """Write every figure as a PNG in ``run.plots``; returns the paths written."""
    # A binarised model is shown the binary test images it is evaluated on, not grey levels.
    test = dataclasses.replace(test, images=held_out_images(test.images, config.binarize))
    figures = build_figures(vae, test, class_names, config.seed, grid_size or config.grid_size, dims)
    run.plots.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = run.plots / name
        replace_atomically(lambda tmp, fig=fig: fig.savefig(tmp, dpi=110, format="png"), path, suffix=".png")
        paths.append(path)
    return paths


def plot_run(run_dir, dims=(0, 1), grid_size=None, data_dir=None):
    """``vae plot``: redraw a finished run's PNGs under its lock; returns the paths written."""
    from mnist_vae.config import BOUNDS, check_range
    from mnist_vae.data import load_splits

    run = RunDir(run_dir)
    config = run.load_config()
    if grid_size is not None:
        check_range("--grid-size", grid_size, *BOUNDS["grid_size"])
    with locked(run, "vae plot"):
        vae = load_inference_model(run)
        latent_dim = vae.latent_dim
        if latent_dim >= 2 and (not all(0 <= d < latent_dim for d in dims) or dims[0] == dims[1]):
            raise UserError(f"--dims must be two different latent dimensions in 0..{latent_dim - 1}, got {list(dims)}")
        run.check_writable()
        run.check_free_space(PLOT_BYTES)
        splits = load_splits(config.dataset, config.validation_size, limit=1, data_dir=data_dir)
        return write_plots(run, vae, splits.test, splits.spec.class_names, config, dims=dims,
                           grid_size=grid_size)
