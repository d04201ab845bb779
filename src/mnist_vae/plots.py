"""Pure figure builders: arrays in, ``matplotlib.figure.Figure`` out.

No pyplot (so no global figure state and no ``show``); callers save the figures.
"""

import numpy as np
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure


def tile_images(images, rows, cols, pad=1, fill=1.0):
    """Arrange ``rows * cols`` images (n, h, w[, c]) into one (rows*(h+pad)-pad, cols*(w+pad)-pad[, c]) array."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    n, h, w = images.shape[:3]
    if n > rows * cols:
        raise ValueError(f"{n} images do not fit a {rows}x{cols} grid")
    canvas = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, *images.shape[3:]), fill, images.dtype)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = image
    return canvas


def _show(ax, image):
    """Greyscale (h, w) or colour (h, w, 3) in [0, 1], no axes."""
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def latent_scatter(points, labels, class_names, title="Latent space (test set)", axis_labels=("z[0]", "z[1]")):
    """Scatter of 2-D points coloured by class, with a colour bar naming the classes."""
    points = np.asarray(points)
    n_classes = len(class_names)
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.add_subplot()
    norm = BoundaryNorm(np.arange(-0.5, n_classes + 0.5), n_classes)
    y = points[:, 1] if points.shape[1] > 1 else labels + np.random.default_rng(0).uniform(-0.3, 0.3, len(labels))
    sc = ax.scatter(points[:, 0], y, c=labels, cmap="tab10", norm=norm, s=2, alpha=0.7, rasterized=True)
    bar = fig.colorbar(sc, ax=ax, ticks=np.arange(n_classes))
    bar.ax.set_yticklabels(class_names)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1] if points.shape[1] > 1 else "class (jittered)")
    ax.set_title(title)
    return fig


def manifold_grid(images, values, title="Decoded latent grid", axis_labels=("z[0]", "z[1]")):
    """Decoded grid images (g*g, h, w[, c]) shown as one picture with the latent values on the axes."""
    g = len(values)
    images = np.asarray(images)
    h, w = images.shape[1:3]
    canvas = tile_images(images, g, g, pad=0)
    fig = Figure(figsize=(9, 9), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    step = max(1, g // 8)  # at most ~8 tick labels per axis so they stay readable
    ticks = np.arange(0, g, step)
    ax.set_xticks(ticks * w + w / 2, [f"{values[i]:.2f}" for i in ticks])
    ax.set_yticks(ticks * h + h / 2, [f"{values[::-1][i]:.2f}" for i in ticks])
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    return fig


def image_rows(rows, row_titles, title, col_titles=None, size=1.2):
    """Rows of images (each (n, h, w[, c])) one above another, each row labelled on the left (columns on top)."""
    n = max(len(r) for r in rows)
    fig = Figure(figsize=(size * n, (size + 0.1) * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (row, name) in enumerate(zip(rows, row_titles)):
        for c in range(n):
            ax = axes[r, c]
            if c < len(row):
                _show(ax, _squeeze(row[c]))
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name)
    for c, name in enumerate(col_titles or ()):
        axes[0, c].set_title(name, fontsize=8)
    fig.suptitle(title)
    return fig


def manifold_panels(panels, titles, title):
    """One decoded latent grid per panel ((g*g, h, w[, c]) each), side by side in rows of five."""
    cols = min(5, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig = Figure(figsize=(3 * cols, 3 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, panel, name in zip(axes.flat, panels, titles):
        g = int(round(np.sqrt(len(panel))))
        _show(ax, _squeeze(tile_images(panel, g, g, pad=0)))
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def draw_paths(fig, paths):
    """Draw straight latent paths ((pairs, steps, 2) points) on a ``latent_scatter`` figure, with their ends marked."""
    ax = fig.axes[0]
    for path in paths:
        ax.plot(path[:, 0], path[:, 1], "-", color="black", linewidth=1.2)
        ax.plot(path[[0, -1], 0], path[[0, -1], 1], "o", color="black", markersize=4)
    return fig


def reconstructions(originals, reconstructed, title="Reconstructions (test set)"):
    """Originals above their reconstructions."""
    return image_rows([originals, reconstructed], ["original", "reconstruction"], title)


def samples(images, cols=10, title="Samples from the prior"):
    """A grid of generated images."""
    images = np.asarray(images)
    rows = int(np.ceil(len(images) / cols))
    canvas = tile_images(images, rows, cols, pad=2)
    fig = Figure(figsize=(cols * 0.9, rows * 0.9 + 0.5), layout="constrained")
    ax = fig.add_subplot()
    _show(ax, canvas)
    ax.set_title(title)
    return fig


def _squeeze(image):
    image = np.asarray(image)
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
