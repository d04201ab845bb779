"""Pointer-to-picture latency of the latent explorer, measured in Chromium: server-side decoding against in-browser ONNX.

    python benchmarks/explorer_latency.py RUN [--moves 200] [--ort-dir DIR]

1. **server**: ``vae serve RUN`` and its page, as users get them. Each pointer move over the scatter
   sends z to ``/api/decode``; the page records the time from the pointer event to the drawn
   picture (``window.explorer.latencies``).
2. **browser**: the run's decoder exported to ONNX (``vae export``) and run by onnxruntime-web
   (WebAssembly, one thread) inside the page; a benchmark-only page here does the same pointer ->
   z -> logits -> sigmoid -> canvas, timed the same way. onnxruntime-web comes from npm: ``--ort-dir``
   names its ``dist`` folder, else it is installed with ``npm install onnxruntime-web`` into
   ``--cache`` (default: ``~/.cache/mnist-vae/onnxruntime-web``).

The pointer visits ``--moves`` points on a fixed path over the plane, waiting for each picture
before the next move, so each latency is one decode end to end. Prints median, p95 and max per
path and the one-off start (page load to ready, including the ONNX session for the browser path).
"""

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import machine

CHROMIUM = "/usr/bin/chromium"

BROWSER_PAGE = """<!doctype html><html><head><meta charset="utf-8"><script src="/ort/ort.min.js"></script></head>
<body><canvas id="scatter" width="480" height="480" style="border:1px solid #ccc"></canvas>
<canvas id="decoded" width="SIDE" height="SIDE"></canvas>
<script>
"use strict";
const META = META_JSON, VIEW = VIEW_JSON;
const state = {latencies: [], ready: false};
window.explorer = state;
ort.env.wasm.wasmPaths = "/ort/";
ort.env.wasm.numThreads = 1;
let session, busy = false;
async function start() {
  session = await ort.InferenceSession.create("/decoder.onnx", {executionProviders: ["wasm"]});
  await decode([0, 0], performance.now());  // the first run compiles; not counted
  state.latencies = [];
  document.getElementById("scatter").addEventListener("pointermove", onPointer);
  document.body.dataset.ready = "true";
}
function zAt(x, y) {
  const c = document.getElementById("scatter");
  const u = VIEW.u0 + x / c.width * (VIEW.u1 - VIEW.u0), v = VIEW.v0 + (1 - y / c.height) * (VIEW.v1 - VIEW.v0);
  return META.origin.map((o, k) => o + u * META.axes[0][k] + v * (META.axes[1] ? META.axes[1][k] : 0));
}
async function decode(z, started) {
  const input = new ort.Tensor("float32", Float32Array.from(z), [1, z.length]);
  const feeds = {}; feeds[session.inputNames[0]] = input;
  const logits = (await session.run(feeds))[session.outputNames[0]].data;  // (1, P, P, 1), P = side + 2 pad
  const side = META.side, pad = META.pad, full = side + 2 * pad;
  const ctx = document.getElementById("decoded").getContext("2d"), image = ctx.createImageData(side, side);
  for (let i = 0; i < side; i++) for (let j = 0; j < side; j++) {
    const level = 255 / (1 + Math.exp(-logits[(i + pad) * full + (j + pad)])), p = 4 * (i * side + j);
    image.data[p] = image.data[p + 1] = image.data[p + 2] = Math.round(level); image.data[p + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  state.latencies.push(performance.now() - started);
}
async function onPointer(event) {
  if (busy) return;
  busy = true;
  const started = performance.now(), r = event.target.getBoundingClientRect();
  try { await decode(zAt(event.clientX - r.left, event.clientY - r.top), started); } finally { busy = false; }
}
start();
</script></body></html>"""


def pointer_path(moves):
    """(fx, fy) fractions of the scatter: a fixed spiral over the middle of the plane."""
    import math

    return [(0.5 + 0.4 * (k / moves) * math.cos(0.3 * k), 0.5 + 0.4 * (k / moves) * math.sin(0.3 * k))
            for k in range(moves)]


def measure(page, moves):
    box = page.locator("#scatter").bounding_box()
    for k, (fx, fy) in enumerate(pointer_path(moves)):
        before = page.evaluate("window.explorer.latencies.length")
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function(f"window.explorer.latencies.length > {before}", timeout=30_000)
    return page.evaluate("window.explorer.latencies")


def summary(name, latencies, start_seconds):
    ordered = sorted(latencies)
    return {"path": name, "moves": len(ordered), "median_ms": statistics.median(ordered),
            "p95_ms": ordered[int(0.95 * (len(ordered) - 1))], "max_ms": ordered[-1], "start_s": start_seconds}


def server_path(browser, run, moves):
    process = subprocess.Popen([sys.executable, "-m", "mnist_vae", "serve", str(run), "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+/", process.stdout.readline()).group(0)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        start = time.perf_counter() - started
        measure(page, 5)  # the first decodes of a new connection: not counted
        page.evaluate("window.explorer.latencies = []")
        result = summary("server: vae serve, /api/decode", measure(page, moves), start)
        view = page.evaluate("window.explorer.view")
        plane = page.evaluate("window.explorer.plane")
        info = page.evaluate("window.explorer.info")
        page.close()
        return result, view, plane, info
    finally:
        process.terminate()
        process.wait(timeout=30)


def ort_dist(args):
    if args.ort_dir:
        return Path(args.ort_dir)
    dist = args.cache / "node_modules" / "onnxruntime-web" / "dist"
    if not (dist / "ort.min.js").exists():
        if not shutil.which("npm"):
            raise SystemExit("the browser path needs onnxruntime-web: pass --ort-dir, or install npm")
        args.cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(args.cache), "onnxruntime-web"], check=True)
    return dist


def browser_path(browser, run, moves, dist, view, plane, info):
    import json

    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, HTMLResponse
    from fastapi.staticfiles import StaticFiles

    from mnist_vae.export import export_run

    onnx_file = Path(run) / "export" / "decoder.onnx"
    if not onnx_file.exists():
        export_run(run)
    meta = {"origin": plane["origin"], "axes": plane["axes"], "side": info["side"],
            "pad": json.loads((Path(run) / "export" / "export.json").read_text())["pad"]}
    html = (BROWSER_PAGE.replace("META_JSON", json.dumps(meta)).replace("VIEW_JSON", json.dumps(view))
            .replace("SIDE", str(info["side"])))
    app = FastAPI()
    app.get("/")(lambda: HTMLResponse(html))
    app.get("/decoder.onnx")(lambda: FileResponse(onnx_file))
    app.mount("/ort", StaticFiles(directory=dist))
    # log_config=None: uvicorn leaves logging alone (its dictConfig would reconfigure the caller's handlers)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        started = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        start = time.perf_counter() - started
        result = summary("browser: onnxruntime-web (wasm, 1 thread)", measure(page, moves), start)
        page.close()
        return result
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def main(argv=None):
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished `vae train` run directory (a factorised decoder)")
    parser.add_argument("--moves", type=int, default=200)
    parser.add_argument("--ort-dir", help="onnxruntime-web's dist folder (default: npm-installed into --cache)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mnist-vae" / "onnxruntime-web")
    parser.add_argument("--chromium", default=shutil.which("chromium") or CHROMIUM)
    parser.add_argument("--paths", nargs="+", choices=["server", "browser"], default=["server", "browser"])
    args = parser.parse_args(argv)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        server, view, plane, info = server_path(browser, args.run, args.moves)  # the browser path's plane too
        rows = [server] if "server" in args.paths else []
        if "browser" in args.paths:
            rows.append(browser_path(browser, args.run, args.moves, ort_dist(args), view, plane, info))
        browser.close()
    print(machine())
    print(f"pointer move -> picture drawn, {args.moves} moves, {args.run}")
    print("| decoding | median ms | p95 ms | max ms | page ready (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['path']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} | {r['start_s']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
