"""``vae serve``: a local web page to see and steer a finished run's latent space.

The server holds one run's VAE and its test-set codes; the page (``explorer/index.html``) draws
the scatter and asks the server to decode or encode. Everything a request carries is validated
before it reaches the model, bodies are bounded, and every error is JSON with a status code.

Requests must name the server in their ``Host`` header (``allowed_hosts``): a web page elsewhere
that points its own domain name at 127.0.0.1 (DNS rebinding) would otherwise reach the
explorer from the user's browser, read the run, its test images and codes, and keep the CPU
busy. Starlette's ``TrustedHostMiddleware`` answers anything else with 400.

The latent plane: for a 2-D latent, the latent space itself. For more dimensions, a plane
through ``origin`` spanned by two orthonormal ``axes`` in latent space: the test codes' first two
principal components (origin at their mean), or two chosen dimensions (origin 0, or a chosen test
image's code). The page turns a plane point (u, v) into z = origin + u axes[0] + v axes[1] and
sends z, so the server stays stateless and every z it decodes is checked the same way.
"""

import base64
import dataclasses
import ipaddress
import socket
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import Annotated

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


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def allowed_hosts(host="127.0.0.1", extra=()):
    """The ``Host`` names a request may carry: loopback names, the listening address, and ``extra``."""
    names = [*LOOPBACK_NAMES, f"[{host}]" if ":" in host else host, *extra]
    return list(dict.fromkeys(name.lower() for name in names))


def create_app(explorer, hosts=LOOPBACK_NAMES):
    """The FastAPI application serving ``explorer``: the page, ``/api/info``, ``/api/decode``, ``/api/encode``.

    Only requests whose ``Host`` is one of ``hosts`` are answered (see the module's docstring).
    """
    from fastapi import FastAPI, Request
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.exceptions import HTTPException

    d = explorer.vae.latent_dim
    side, channels = explorer.geometry.side, explorer.geometry.channels
    n_classes = explorer.vae.num_classes
    Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-Z_BOUND, le=Z_BOUND)]
    # An unconditional model takes no label: check_label says so, rather than a bound of 0.
    OneLabel = Annotated[int, Field(ge=0, le=n_classes - 1)] if n_classes else Annotated[int, Field(ge=0)]
    Label = OneLabel | None

    class DecodeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        z: Annotated[list[Annotated[list[Coordinate], Field(min_length=d, max_length=d)]],
                     Field(min_length=1, max_length=explorer.max_decode)]
        label: OneLabel | list[OneLabel] | None = None  # one for every z, or one per z

    class EncodeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        pixels: Annotated[str, Field(max_length=4 * side * side * channels)]  # base64 of uint8 bytes
        label: Label = None

    class Failure(Exception):
        def __init__(self, status, message):
            super().__init__(message)
            self.status, self.message = status, message

    def error(status, message):
        return JSONResponse({"error": message}, status_code=status)

    app = FastAPI(title="mnist-vae latent explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts), www_redirect=False)

    @app.exception_handler(Failure)
    async def _failure(request, exc):
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def _http(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return error(422, _first_problem(exc.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc):  # never a traceback in a response; the server's log has it
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    async def read_body(request, model):
        """``model`` parsed from a JSON body of at most ``MAX_BODY_BYTES``, or a ``Failure``."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise Failure(415, f"send JSON (Content-Type: application/json), not {media or 'no content type'}")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            raise Failure(413, f"request bodies are at most {MAX_BODY_BYTES:,} bytes")
        body = bytearray()
        async for chunk in request.stream():  # a body without Content-Length is counted as it arrives
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise Failure(413, f"request bodies are at most {MAX_BODY_BYTES:,} bytes")
        try:
            return model.model_validate_json(bytes(body))
        except ValidationError as e:
            raise Failure(422, _first_problem(e.errors())) from None

    def check_label(label):
        if explorer.vae.conditional and label is None:
            raise Failure(422, f"label: this model is conditional; send a label in 0..{n_classes - 1}")
        if not explorer.vae.conditional and label is not None:
            raise Failure(422, "label: this model is not conditional; leave the label out")

    @app.get("/", response_class=HTMLResponse)
    def page():
        return resources.files("mnist_vae").joinpath("explorer/index.html").read_text(encoding="utf-8")

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)  # none: a browser asks anyway

    @app.get("/api/info")
    def info():
        return cached_info

    @app.post("/api/decode")
    async def decode(request: Request):
        req = await read_body(request, DecodeRequest)
        check_label(req.label)
        if isinstance(req.label, list) and len(req.label) != len(req.z):
            raise Failure(422, f"label: one label for all, or one per z ({len(req.z)}), not {len(req.label)}")
        images = await _in_thread(explorer.decode, np.asarray(req.z, np.float32), req.label)
        return {"side": side, "channels": channels, "images": encode_pixels(images)}

    @app.post("/api/encode")
    async def encode(request: Request):
        req = await read_body(request, EncodeRequest)
        check_label(req.label)
        try:
            raw = base64.b64decode(req.pixels, validate=True)
        except ValueError:
            raise Failure(422, "pixels: not base64") from None
        if len(raw) != side * side * channels:
            raise Failure(422, f"pixels: expected {side}x{side}x{channels} = {side * side * channels} bytes "
                               f"(uint8, row-major), got {len(raw)}")
        image = np.frombuffer(raw, np.uint8).reshape(side, side, channels)
        z_mean, z_log_var = await _in_thread(explorer.encode, image, req.label)
        reconstruction = await _in_thread(explorer.decode, z_mean[None], req.label)
        return {"z_mean": z_mean.tolist(), "z_log_var": z_log_var.tolist(),
                "reconstruction": encode_pixels(reconstruction)[0]}

    @app.get("/api/points")
    def points(kind: str = "auto", i: int = 0, j: int = 1, origin: int | None = None):
        """The test points on another plane: ``pca``, or dimensions ``i`` and ``j`` through 0 or test image ``origin``."""
        if kind not in ("auto", "pca", "dims"):
            raise Failure(422, f"kind: one of auto, pca, dims, not {kind[:40]!r}")
        if kind == "dims" and not (0 <= i < d and 0 <= j < d and i != j):
            raise Failure(422, f"i, j: two different latent dimensions in 0..{d - 1}, not {i} and {j}")
        if origin is not None and not 0 <= origin < len(explorer.test_inputs):
            raise Failure(422, f"origin: a test image index in 0..{len(explorer.test_inputs) - 1}, not {origin}")
        plane = make_plane(explorer.z_mean, kind, (i, j), None if origin is None else explorer.z_mean[origin])
        return {"plane": plane.to_json(), "points": plane.points_json(explorer.z_mean)}

    @app.get("/api/test/{index}")
    def test_image(index: int):
        if not 0 <= index < len(explorer.test_inputs):
            raise Failure(404, f"test image {index} does not exist; there are {len(explorer.test_inputs):,}")
        image, label, z_mean = explorer.test_image(index)
        return {"index": index, "label": label, "z_mean": z_mean.tolist(), "pixels": encode_pixels(image[None])[0]}

    cached_info = explorer.info()  # computed once: 10,000 points
    return app


async def _in_thread(function, *args):
    """Run a model call in a worker thread, so the event loop keeps answering."""
    import anyio

    return await anyio.to_thread.run_sync(lambda: function(*args))


def _first_problem(errors):
    """Pydantic's validation errors -> one line naming the first bad field and what it must be."""
    if not errors:
        return "invalid request"
    first = errors[0]
    # A union's errors name the member tried ("constrained-int", "list[...]"): not a place in the body.
    parts = [str(part) for part in first.get("loc", ()) if part != "body"]
    where = ".".join(part for part in parts if part.isidentifier() or part.isdigit()) or "body"
    return f"{where}: {first.get('msg', 'invalid')}"[:300]


def is_loopback(host):
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_socket(host, port):
    """A listening socket on (host, port), or a ``UserError`` saying why not (port taken, no such address)."""
    from mnist_vae.config import check_range

    check_range("--port", port, 0, 65535)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host!r}: not an address of this machine ({e.strerror}); "
                        "use 127.0.0.1 or this machine's address") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port") from None
    sock.listen(128)
    return sock


def serve(run_dir, host="127.0.0.1", port=8000, data_dir=None, out=sys.stdout, allow_hosts=()):
    """``vae serve``: serve ``run_dir``'s explorer on (host, port) until interrupted."""
    import uvicorn

    for name in allow_hosts:
        bracketed = name.startswith("[") and name.endswith("]")  # an IPv6 address, as a browser sends it
        if not name or "*" in name or (not bracketed and any(c in name for c in "/:@ ")):
            raise UserError(f"--allow-host {name!r}: give a host name or address as a browser sends it "
                            "(example.lan, 192.168.1.5, [fe80::1]), without port or wildcard")
    hosts = allowed_hosts(host, allow_hosts)
    sock = open_socket(host, port)  # before loading: a taken port fails at once
    if not is_loopback(host):
        print(f"warning: --host {host} is not a loopback address: anyone who can reach this machine "
              f"can use the page and its model; requests must name it as {', '.join(hosts)} (add others with "
              "--allow-host)", file=sys.stderr)
    try:
        app = create_app(Explorer.from_run(run_dir, data_dir=data_dir), hosts)
    except BaseException:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"latent explorer of {run_dir}: http://{shown}:{bound_port}/ (Ctrl-C stops it)", file=out, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])

