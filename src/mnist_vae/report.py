"""Render a run's pictures to PNG files: the only place figures meet the file system."""

import dataclasses

import numpy as np

from mnist_vae import inference, plots
from mnist_vae.data import held_out_images
from mnist_vae.errors import UserError
from mnist_vae.atomic import replace_atomically
from mnist_vae.lock import locked
from mnist_vae.rundir import RunDir, load_inference_model

# Free space ``write_plots`` asks for: the four PNGs take well under 1 MB at the largest grid.
PLOT_BYTES = 10_000_000


def build_figures(vae, test, class_names, seed=0, grid_size=20, dims=(0, 1), n_examples=10):
    """Figures of a trained model: name -> Figure.

    Every model: the latent scatter, reconstructions, samples and interpolations; a manifold for
    latent_dim >= 2. A conditional model draws samples as a class-by-column grid, analogies, and
    per-class manifolds instead of one.
    """
    latent_dim = vae.latent_dim
    z_mean, _ = inference.encode(vae, test.images, test.labels)
    if latent_dim == 2:
        points, axis_labels, title = z_mean, ("z[0]", "z[1]"), "Latent space: posterior means (test set)"
    elif latent_dim > 2:
        points, ratios = inference.principal_components(z_mean)
        axis_labels = tuple(f"PC{i + 1} ({r:.0%} of variance)" for i, r in enumerate(ratios))
        title = f"Latent space: first two principal components of {latent_dim}-D posterior means (test set)"
    else:
        points, axis_labels, title = z_mean, ("z[0]", ""), "Latent space: posterior means (test set)"
    if vae.conditional:
        title += ", given the label"
    figures = {"latent_scatter.png": plots.latent_scatter(points, test.labels, class_names, title, axis_labels)}
    # The first test image of each class, so every class appears once.
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in np.unique(test.labels)][:n_examples]
    originals, labels = test.images[picks], test.labels[picks]
    figures["reconstructions.png"] = plots.reconstructions(
        vae.geometry.from_model_input(originals), inference.reconstruct(vae, originals, labels, seed=seed)
    )
    figures["interpolation.png"] = _interpolation(vae, test, z_mean, seed, figures["latent_scatter.png"])
    noise = inference.prior_noise(100, latent_dim, seed)
    if vae.conditional:
        figures.update(_conditional_figures(vae, originals, labels, class_names, noise, seed, grid_size, dims))
    else:
        figures["samples.png"] = plots.samples(inference.decode(vae, noise, seed=seed), cols=10)
        if latent_dim >= 2:
            z, values = inference.manifold_latents(grid_size, latent_dim, dims)
            extra = "" if latent_dim == 2 else f" (other {latent_dim - 2} dimensions at 0)"
            figures["manifold.png"] = plots.manifold_grid(
                inference.decode(vae, z, seed=seed), values, f"Decoded latent grid at Normal quantiles{extra}",
                (f"z[{dims[0]}]", f"z[{dims[1]}]"),
            )
    return figures


INTERPOLATION_PAIRS = 6
INTERPOLATION_STEPS = 10


def _interpolation(vae, test, z_mean, seed, scatter):
    """Strips decoded along straight latent lines between pairs of test images (drawn on a 2-D scatter).

    Pairs are fixed by ``seed``; a conditional model's label weights move along the line too.
    """
    rng = np.random.default_rng([seed, 3])
    ends = rng.choice(len(test.images), size=(INTERPOLATION_PAIRS, 2), replace=False)
    paths = inference.interpolation_latents(z_mean[ends[:, 0]], z_mean[ends[:, 1]], INTERPOLATION_STEPS)
    z = paths.reshape(-1, vae.latent_dim)
    labels = None
    if vae.conditional:
        one_hot = np.eye(vae.num_classes, dtype=np.float32)[test.labels]
        labels = inference.interpolation_latents(one_hot[ends[:, 0]], one_hot[ends[:, 1]], INTERPOLATION_STEPS)
        labels = labels.reshape(-1, vae.num_classes)
    decoded = inference.decode(vae, z, labels, seed=seed).reshape(INTERPOLATION_PAIRS, INTERPOLATION_STEPS,
                                                                   *vae.geometry.image_shape)
    if vae.latent_dim == 2:
        plots.draw_paths(scatter, paths)
    originals = vae.geometry.from_model_input(test.images[ends])  # (pairs, 2, h, w, c)
    rows = [np.concatenate([originals[i, :1], decoded[i], originals[i, 1:]]) for i in range(INTERPOLATION_PAIRS)]
    cols = ["start", *[f"{t:.2f}" for t in np.linspace(0, 1, INTERPOLATION_STEPS)], "end"]
    return plots.image_rows(rows, [f"pair {i + 1}" for i in range(INTERPOLATION_PAIRS)],
                            "Straight lines in latent space between test images (posterior means), decoded",
                            col_titles=cols, size=0.9)


def _conditional_figures(vae, originals, labels, class_names, noise, seed, grid_size, dims):
    """Class-by-column samples, analogies, and per-class manifolds of a conditional model."""
    classes = np.arange(vae.num_classes)
    columns = noise[:10]
    z = np.tile(columns, (len(classes), 1))  # row c: every column's z with label c
    samples = inference.decode(vae, z, np.repeat(classes, len(columns)), seed=seed)
    figures = {"samples.png": plots.image_rows(
        [samples[c * len(columns):(c + 1) * len(columns)] for c in classes], list(class_names),
        "Samples by class: each row one label, each column one z from the prior", size=0.9)}
    # Analogies: each test image's z (encoded with its own label), decoded with every label.
    z_mean, _ = inference.encode(vae, originals, labels)
    decoded = inference.decode(vae, np.repeat(z_mean, len(classes), axis=0), np.tile(classes, len(z_mean)), seed=seed)
    decoded = decoded.reshape(len(z_mean), len(classes), *decoded.shape[1:])
    rows = [np.concatenate([vae.geometry.from_model_input(originals[i:i + 1]), decoded[i]]) for i in range(len(z_mean))]
    figures["analogies.png"] = plots.image_rows(
        rows, [f"test {class_names[c]}" for c in labels], "Analogies: each test image's z decoded with every label",
        col_titles=["original", *class_names], size=0.9)
    if vae.latent_dim >= 2:
        g = min(grid_size, 10)  # ten manifolds in one figure
        grid, _ = inference.manifold_latents(g, vae.latent_dim, dims)
        panels = [inference.decode(vae, grid, c, seed=seed) for c in classes]
        extra = "" if vae.latent_dim == 2 else f", other {vae.latent_dim - 2} dimensions at 0"
        figures["class_manifolds.png"] = plots.manifold_panels(
            panels, list(class_names),
            f"The same {g}x{g} grid of z[{dims[0]}], z[{dims[1]}] at Normal quantiles, decoded with each label{extra}")
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
        splits = load_splits(config.dataset, config.validation_size, limit=1, data_dir=data_dir,
                             test_limit=config.test_limit)
        return write_plots(run, vae, splits.test, splits.spec.class_names, config, dims=dims,
                           grid_size=grid_size)
