"""``vae serve``: a local web page to see and steer a finished run's latent space.

The server holds one run's VAE and its test-set codes; the page (``explorer/index.html``) draws
the scatter and asks the server to decode or encode. Everything a request carries is validated
before it reaches the model, bodies are bounded, and every error is JSON with a status code.

Requests must name the server in their ``Host`` header (``allowed_hosts``): a web page elsewhere
that points its own domain name at 127.0.0.1 (DNS rebinding) would otherwise reach the
explorer from the user's browser, read the run, its test images and codes, and keep the CPU
busy. Starlette's ``TrustedHostMiddleware`` answers anything else with 400.

The model side (the run's codes, the latent plane, decoding) is ``explore.Explorer``.
"""

import base64
import ipaddress
import socket
import sys
from importlib import resources
from typing import Annotated

import numpy as np

from mnist_vae.errors import UserError
from mnist_vae.explore import MAX_BODY_BYTES, Z_BOUND, Explorer, encode_pixels, make_plane

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

