"""The latent explorer in a real browser: Debian's headless Chromium, driven by Playwright.

`vae serve` runs in its own process, as a user starts it; the page is loaded, the pointer moved,
a digit drawn and a label picked, and what the page shows is compared with the model's own
decoding in this process. Skips where Chromium or Playwright is missing (.ci/run installs both).
"""

import base64
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_vae import inference
from mnist_vae.rundir import RunDir, load_inference_model

from conftest import tiny_config

CHROMIUM = os.environ.get("MNIST_VAE_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install playwright)")
if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set MNIST_VAE_CHROMIUM)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


class Server:
    """``vae serve DIR --port 0`` in a child process; its address from the line it prints."""

    def __init__(self, run_dir):
        self.process = subprocess.Popen([sys.executable, "-m", "mnist_vae", "serve", str(run_dir), "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()  # printed once the model is loaded and the port open
        found = re.search(r"http://\S+/", line)
        if not found:
            self.process.kill()
            raise AssertionError(f"vae serve printed {line!r}; stderr: {self.process.stderr.read()[-2000:]}")
        self.url = found.group(0)

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


@contextlib.contextmanager
def explorer_page(browser, run_dir):
    """(the run's VAE here, the explorer's page from `vae serve`); on leaving, the page must have had no errors."""
    server = Server(run_dir)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server.url)
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        yield load_inference_model(RunDir(run_dir)), page
        assert errors == [] and page.evaluate("window.explorer.errors") == []
    finally:
        page.close()
        server.close()


def canvas_pixels(page, canvas_id):
    """The canvas's RGBA pixels as an (h, w, 4) uint8 array."""
    width, height, data = page.evaluate("""(id) => {
        const c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        return [c.width, c.height, Array.from(d.data)];
    }""", canvas_id)
    return np.asarray(data, np.uint8).reshape(height, width, 4)


def hover(page, fx, fy):
    """Move the pointer to a fraction (fx, fy) of the scatter and wait for its decoding to be drawn."""
    before = page.evaluate("window.explorer.latencies.length")
    box = page.locator("#scatter").bounding_box()
    page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.wait_for_function(f"window.explorer.latencies.length > {before} && !window.explorer.inFlight "
                           "&& !window.explorer.pending", timeout=10_000)
    return page.evaluate("window.explorer.lastDecoded")


def expected_image(vae, z, label=None):
    """The model's own decoding of z in this process, as the page's grey levels."""
    labels = None if label is None else np.asarray([label])
    return np.rint(inference.decode(vae, np.asarray([z], np.float32), labels)[0, ..., 0] * 255)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    from mnist_vae.train import train

    out = tmp_path_factory.mktemp("explorer")
    train(tiny_config(epochs=2), out, verbose=0)
    return out


def test_the_pointer_decodes_the_plane_as_the_model_does(browser, plain_run):
    with explorer_page(browser, plain_run) as (vae, page):
        shown = []
        for fx, fy in [(0.2, 0.3), (0.5, 0.5), (0.8, 0.7)]:
            decoded = hover(page, fx, fy)
            pixels = canvas_pixels(page, "decoded")[..., 0].astype(int)
            assert np.abs(pixels - expected_image(vae, decoded["z"])).max() <= 1
            shown.append(pixels)
        assert not np.array_equal(shown[0], shown[2]), "moving the pointer changes the picture"
        latencies = page.evaluate("window.explorer.latencies")
        assert all(0 < t < 10_000 for t in latencies)


def test_a_request_naming_a_foreign_host_is_refused_while_the_page_works(browser, plain_run):
    import http.client
    from urllib.parse import urlsplit

    with explorer_page(browser, plain_run) as (vae, page):
        address = urlsplit(page.url)
        for host, status in [("evil.example", 400), (f"evil.example:{address.port}", 400), (address.netloc, 200)]:
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
            connection.request("GET", "/api/info", headers={"Host": host})
            response = connection.getresponse()
            assert response.status == status, (host, response.read()[:200])
            connection.close()
        assert hover(page, 0.5, 0.5)["z"], "the page itself still decodes"


def test_a_drawn_digit_is_encoded_marked_on_the_scatter_and_reconstructed(browser, plain_run):
    with explorer_page(browser, plain_run) as (vae, page):
        before = canvas_pixels(page, "scatter")
        box = page.locator("#draw").bounding_box()
        page.mouse.move(box["x"] + 140, box["y"] + 50)
        page.mouse.down()
        for y in range(50, 240, 10):  # a vertical stroke: a "1"
            page.mouse.move(box["x"] + 140, box["y"] + y)
        page.mouse.up()
        page.wait_for_function("window.explorer.encoded && window.explorer.encoded.point", timeout=10_000)
        encoded = page.evaluate("window.explorer.encoded")
        # The page encoded what it drew: the same 28x28 pixels give the same code here.
        drawn = page.evaluate("drawingPixels()")
        image = np.frombuffer(base64.b64decode(drawn), np.uint8).reshape(28, 28)
        assert image.max() > 200 and image[:, :5].max() == 0, "a centred stroke, downscaled"
        z_mean, _ = inference.encode(vae, vae.geometry.to_model_input(image[None]))
        np.testing.assert_allclose(encoded["z_mean"], z_mean[0], atol=1e-4)
        np.testing.assert_allclose(encoded["point"], z_mean[0], atol=1e-4)  # a 2-D plane is the latent space
        # A mark appeared on the scatter where the code lies.
        after = canvas_pixels(page, "scatter")
        view = page.evaluate("window.explorer.view")
        x = (encoded["point"][0] - view["u0"]) / (view["u1"] - view["u0"]) * after.shape[1]
        y = (1 - (encoded["point"][1] - view["v0"]) / (view["v1"] - view["v0"])) * after.shape[0]
        region = (slice(max(int(y) - 8, 0), int(y) + 9), slice(max(int(x) - 8, 0), int(x) + 9))
        assert (after[region] != before[region]).any(), "the encoded point is drawn"
        reconstruction = canvas_pixels(page, "reconstruction")[..., 0].astype(int)
        assert np.abs(reconstruction - expected_image(vae, encoded["z_mean"])).max() <= 1


def test_a_conditional_model_decodes_with_the_picked_label(browser, tmp_path):
    from mnist_vae.train import train

    train(tiny_config(conditional=True, epochs=1), tmp_path, verbose=0)
    with explorer_page(browser, tmp_path) as (vae, page):
        decoded = hover(page, 0.5, 0.5)
        assert decoded["label"] == 0
        page.select_option("#label", "7")
        deadline = time.monotonic() + 10
        while page.evaluate("window.explorer.lastDecoded.label") != 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        decoded = page.evaluate("window.explorer.lastDecoded")
        assert decoded["label"] == 7
        pixels = canvas_pixels(page, "decoded")[..., 0].astype(int)
        assert np.abs(pixels - expected_image(vae, decoded["z"], 7)).max() <= 1
        # The ten decodings of the current z side by side, one per label.
        page.wait_for_timeout(500)
        ten = canvas_pixels(page, "ten")[..., 0].astype(int)
        assert ten.shape == (28, 280)
        assert np.abs(ten[:, 7 * 28:8 * 28] - expected_image(vae, decoded["z"], 7)).max() <= 1


def test_two_clicks_on_test_points_decode_the_strip_between_their_codes(browser, plain_run):
    with explorer_page(browser, plain_run) as (vae, page):
        box = page.locator("#scatter").bounding_box()
        ends = page.evaluate("""() => { const s = window.explorer, c = document.getElementById('scatter');
            const at = (p) => [(p[0] - s.view.u0) / (s.view.u1 - s.view.u0) * c.width,
                               (1 - (p[1] - s.view.v0) / (s.view.v1 - s.view.v0)) * c.height];
            return [at(s.points[3]), at(s.points[7])]; }""")
        for x, y in ends:
            page.mouse.click(box["x"] + x, box["y"] + y)
            page.wait_for_timeout(300)
        page.wait_for_function("document.getElementById('strip-text').textContent.startsWith('from test image')",
                               timeout=10_000)
        picked = page.evaluate("window.explorer.picked")
        assert all(end.get("index") is not None for end in picked), "each click snapped to a test image"
        z = np.linspace(0, 1, 10)[:, None] * (np.asarray(picked[1]["z"]) - picked[0]["z"]) + picked[0]["z"]
        strip = canvas_pixels(page, "strip")[..., 0].astype(int)
        expected = np.rint(inference.decode(vae, z.astype(np.float32))[..., 0] * 255)
        assert np.abs(strip - np.concatenate(list(expected), axis=1)).max() <= 1
