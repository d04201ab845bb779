"""Figure builders and the arrays they are fed."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from mnist_vae import inference, plots


def test_tile_images_places_each_image_row_major():
    images = np.arange(6 * 2 * 3, dtype=float).reshape(6, 2, 3, 1)
    canvas = plots.tile_images(images, rows=2, cols=3, pad=1, fill=-1)
    assert canvas.shape == (2 * 2 + 1, 3 * 3 + 2)
    np.testing.assert_array_equal(canvas[0:2, 4:7], images[1, ..., 0])
    np.testing.assert_array_equal(canvas[3:5, 8:11], images[5, ..., 0])
    assert (canvas[2] == -1).all()
    with pytest.raises(ValueError, match="do not fit"):
        plots.tile_images(images, 1, 2)


def test_manifold_latents_span_normal_quantiles_with_y_upwards():
    z, values = inference.manifold_latents(5, latent_dim=3, dims=(0, 2))
    assert z.shape == (25, 3)
    np.testing.assert_allclose(values, -values[::-1], atol=1e-6)  # symmetric about 0
    assert values[2] == pytest.approx(0.0, abs=1e-6) and values[-1] == pytest.approx(1.2816, abs=1e-3)
    grid = z.reshape(5, 5, 3)
    np.testing.assert_allclose(grid[0, :, 0], values)  # x increases along a row
    np.testing.assert_allclose(grid[:, 0, 2], values[::-1])  # y decreases down the rows
    assert not grid[..., 1].any()


def test_principal_components_find_the_direction_of_largest_variance():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 4)) * [0.1, 5.0, 0.1, 0.1]
    projected, ratios = inference.principal_components(z)
    assert projected.shape == (2000, 2) and ratios[0] > 0.95
    np.testing.assert_allclose(np.abs(projected[:, 0]), np.abs(z[:, 1] - z[:, 1].mean()), atol=0.5)


def test_builders_return_figures_without_touching_pyplot():
    import sys

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(9, 28, 28, 1))
    figures = [
        plots.latent_scatter(rng.normal(size=(50, 2)), rng.integers(0, 10, 50), [str(i) for i in range(10)]),
        plots.manifold_grid(images, np.linspace(-1, 1, 3)),
        plots.reconstructions(images[:4], images[4:8]),
        plots.samples(images, cols=3),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
