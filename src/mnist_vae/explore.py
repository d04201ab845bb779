"""The explorer's model side: one run's VAE, its test-set codes and the latent plane the page draws.

The latent plane: for a 2-D latent, the latent space itself. For more dimensions, a plane
through ``origin`` spanned by two orthonormal ``axes`` in latent space: the test codes' first two
principal components (origin at their mean), or two chosen dimensions (origin 0, or a chosen test
image's code). The page turns a plane point (u, v) into z = origin + u axes[0] + v axes[1] and
sends z, so the server (``serve``) stays stateless and every z it decodes is checked the same way.
"""

import base64
import dataclasses
import threading
from pathlib import Path

import numpy as np

from mnist_vae.errors import UserError

Z_BOUND = 100.0  # |z_i| at most this: a prior N(0, I) puts nothing past ~6, a trained posterior past ~20
MAX_BODY_BYTES = 1 << 20  # a decode request of 256 latents of 1,024 dimensions fits; nothing legitimate is larger
MAX_DECODE = 256  # latents per decode request: an interpolation strip or the ten labels are a few dozen
MAX_DECODE_AUTOREGRESSIVE = 16  # pixel by pixel: each image costs a full ancestral sample
MAX_SCATTER_POINTS = 10_000  # the full MNIST test set


@dataclasses.dataclass
class Plane:
    """A 2-D view of latent space: z = origin + u * axes[0] + v * axes[1]."""

    kind: str  # "latent" (the space is 2-D), "pca" or "dims"
    origin: np.ndarray  # (d,)
    axes: np.ndarray  # (2, d), orthonormal rows (for d = 1 the second is 0)
    explained: list | None = None  # variance ratios of the principal components, for kind "pca"
    dims: tuple | None = None  # the chosen dimensions, for kind "dims"

    def project(self, z):
        """(n, d) latents -> (n, 2) plane coordinates (the orthogonal projection)."""
        return (np.asarray(z, np.float64) - self.origin) @ self.axes.T

    def to_json(self):
        return {"kind": self.kind, "origin": self.origin.tolist(), "axes": self.axes.tolist(),
                "explained": self.explained, "dims": list(self.dims) if self.dims else None}

    def points_json(self, z):
        """``project(z)`` as the page gets it: lists of coordinates rounded to 4 places."""
        return np.round(self.project(z), 4).tolist()


def make_plane(z_mean, kind="auto", dims=(0, 1), origin=None):
    """The plane the page starts on: the latent space itself for d <= 2, else principal components or ``dims``."""
    z_mean = np.asarray(z_mean, np.float64)
    d = z_mean.shape[1]
    if d <= 2 and kind in ("auto", "latent"):
        axes = np.eye(2, d)
        return Plane("latent", np.zeros(d), axes)
    if kind in ("auto", "pca"):
        from mnist_vae.inference import principal_axes

        centre, axes, ratios = principal_axes(z_mean, 2)
        return Plane("pca", centre, axes, explained=[float(r) for r in ratios])
    i, j = dims
    return Plane("dims", np.zeros(d) if origin is None else np.asarray(origin, np.float64),
                 np.eye(d)[[i, j]], dims=(i, j))


def encode_pixels(images):
    """uint8-able images in [0, 1] (n, h, w, c) -> base64 strings of their uint8 bytes, row-major."""
    levels = np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
    return [base64.b64encode(image.tobytes()).decode("ascii") for image in levels]


class Explorer:
    """One finished run's model, test codes and plane; thread-safe (one model call at a time)."""

    def __init__(self, vae, test_inputs, test_labels, class_names, name="run"):
        """``test_inputs``: model-ready test images (n, *geometry.model_shape) in [0, 1], as ``data.Split`` holds them."""
        from mnist_vae import inference

        self.vae, self.name = vae, name
        self.class_names = list(class_names or [])
        self.geometry = vae.geometry
        self.test_inputs = test_inputs[:MAX_SCATTER_POINTS]
        self.test_labels = np.asarray(test_labels[:MAX_SCATTER_POINTS])
        self._lock = threading.Lock()  # Keras models are called from the server's worker threads
        conditioning = self.test_labels if vae.conditional else None
        self.z_mean, self.z_log_var = inference.encode(vae, self.test_inputs, conditioning)
        self.plane = make_plane(self.z_mean)
        self.decode(np.zeros((1, vae.latent_dim), np.float32), 0)  # trace now, not on the first hover

    @classmethod
    def from_run(cls, run_dir, data_dir=None):
        """The explorer of a finished ``vae train`` run directory (its ``models/vae.keras``, in float32)."""
        from mnist_vae.data import held_out_images, load_splits
        from mnist_vae.rundir import RunDir, load_inference_model

        run = RunDir(run_dir)
        config = run.load_config()
        if not run.vae.is_file():
            raise UserError(f"{run.vae}: no finished model in {run_dir}; finish the run with "
                            f"`vae train --resume --out {run_dir}` first")
        vae = load_inference_model(run)
        splits = load_splits(config.dataset, config.validation_size, limit=1, data_dir=data_dir,
                             test_limit=config.test_limit)
        inputs = held_out_images(splits.test.images, config.binarize)  # binary models see binary digits
        # The folder's name only: the page need not learn where on this machine the run lives.
        return cls(vae, inputs, splits.test.labels, splits.spec.class_names, name=Path(run_dir).resolve().name)

    @property
    def live(self):
        """Whether decoding is fast enough to follow the pointer: not for a pixel-by-pixel decoder."""
        return not self.vae.autoregressive

    @property
    def max_decode(self):
        """Latents one decode request may carry."""
        return MAX_DECODE if self.live else MAX_DECODE_AUTOREGRESSIVE

    def info(self):
        """What the page needs to draw itself: the model's kind, the plane and the test points on it."""
        return {
            "name": self.name,
            "latent_dim": self.vae.latent_dim,
            "conditional": self.vae.conditional,
            "num_classes": self.vae.num_classes,
            "class_names": self.class_names,
            "autoregressive": self.vae.autoregressive,
            "live": self.live,
            "max_decode": self.max_decode,
            "z_bound": Z_BOUND,
            "side": self.geometry.side,
            "channels": self.geometry.channels,
            "plane": self.plane.to_json(),
            "points": self.plane.points_json(self.z_mean),
            "labels": self.test_labels.tolist(),
        }

    def decode(self, z, label=None):
        """Mean images in [0, 1] (n, h, w, c) of latents (n, d); ``label`` for a conditional model."""
        from mnist_vae import inference

        z = np.asarray(z, np.float32)
        labels = None if not self.vae.conditional else np.broadcast_to(np.asarray(label, np.int64), (len(z),))
        with self._lock:
            return inference.decode(self.vae, z, labels, batch_size=MAX_DECODE)

    def encode(self, image, label=None):
        """One image (side, side, channels) uint8 -> (z_mean (d,), z_log_var (d,)) of its posterior."""
        from mnist_vae import inference

        x = self.geometry.to_model_input(image[None])
        labels = None if not self.vae.conditional else np.asarray([label], np.int64)
        with self._lock:
            z_mean, z_log_var = inference.encode(self.vae, x, labels)
        return z_mean[0], z_log_var[0]

    def test_image(self, index):
        """Test image ``index``: its pixels (side, side, channels) in [0, 1], label and posterior mean."""
        image = self.geometry.from_model_input(self.test_inputs[index:index + 1])[0]
        return np.asarray(image), int(self.test_labels[index]), self.z_mean[index]
