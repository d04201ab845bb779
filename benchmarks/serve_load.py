"""Load test of ``vae serve`` on loopback: N concurrent clients, a fixed number of requests each.

    python benchmarks/serve_load.py RUN [--clients 1 4 16] [--requests 200] [--batch 1]

Starts ``vae serve RUN --port 0`` in its own process (as a user would), then for each client count
sends ``--requests`` decode requests per client (``--batch`` latents each, drawn inside the test
points' range with a fixed seed) plus one encode request in ten, all at once from asyncio
clients over keep-alive connections. Prints, per client count: requests, errors (any status but
200, or a failed connection), throughput, and the p50 / p95 / max latency. Bounded in count and
time (``--timeout`` per request); only 127.0.0.1 is ever contacted.
"""

import argparse
import asyncio
import base64
import re
import statistics
import subprocess
import sys
import time

import httpx
import numpy as np
from harness import machine


def start_server(run):
    process = subprocess.Popen([sys.executable, "-m", "mnist_vae", "serve", str(run), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not found:
        process.kill()
        raise SystemExit(f"vae serve did not start: {line!r} {process.stderr.read()[-2000:]}")
    return process, found.group(0)


async def client(http, url, bodies, timeout):
    latencies, errors = [], 0
    for path, body in bodies:
        started = time.perf_counter()
        try:
            response = await http.post(url + path, json=body, timeout=timeout)
            errors += response.status_code != 200
        except httpx.HTTPError:
            errors += 1
        latencies.append(time.perf_counter() - started)
    return latencies, errors


def requests_for(info, n, batch, rng):
    """``n`` request bodies: decodes of ``batch`` latents inside the test points' range, every tenth an encode."""
    points = np.asarray(info["points"])
    plane = info["plane"]
    origin, axes = np.asarray(plane["origin"]), np.asarray(plane["axes"])
    low, high = points.min(axis=0), points.max(axis=0)
    side, channels = info["side"], info["channels"]
    bodies = []
    for k in range(n):
        label = 0 if info["conditional"] else None
        if k % 10 == 9:
            pixels = rng.integers(0, 256, side * side * channels, dtype=np.uint8)
            body = {"pixels": base64.b64encode(pixels.tobytes()).decode()}
            path = "api/encode"
        else:
            uv = rng.uniform(low, high, (batch, 2))
            body = {"z": (origin + uv @ axes).round(5).tolist()}
            path = "api/decode"
        if label is not None:
            body["label"] = label
        bodies.append((path, body))
    return bodies


async def load(url, info, clients, requests, batch, timeout, seed):
    rng = np.random.default_rng(seed)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        await http.post(url + "api/decode", json={"z": [info["plane"]["origin"]],
                                                   **({"label": 0} if info["conditional"] else {})})
        started = time.perf_counter()
        results = await asyncio.gather(*(client(http, url, requests_for(info, requests, batch, rng), timeout)
                                         for _ in range(clients)))
        wall = time.perf_counter() - started
    latencies = sorted(t for lat, _ in results for t in lat)
    return {"clients": clients, "requests": len(latencies), "errors": sum(e for _, e in results),
            "per_second": len(latencies) / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))], "max_ms": 1000 * latencies[-1]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished `vae train` run directory")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=200, help="requests per client (default: 200)")
    parser.add_argument("--batch", type=int, default=1, help="latents per decode request (default: 1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default: 30)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    process, url = start_server(args.run)
    try:
        info = httpx.get(url + "api/info", timeout=60).json()
        rows = [asyncio.run(load(url, info, n, args.requests, args.batch, args.timeout, args.seed))
                for n in args.clients]
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(machine())
    print(f"vae serve {args.run}: decode requests of {args.batch} latent(s), one in ten an encode")
    print("| clients | requests | errors | requests/s | p50 ms | p95 ms | max ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']:,} | {r['errors']} | {r['per_second']:,.0f} | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
