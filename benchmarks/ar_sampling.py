"""Autoregressive sampling speed: the causal head on a pixel's window against whole rows.

    python benchmarks/ar_sampling.py [BATCH ...]

For each batch size (default 16 100 500), ``inference.sample_autoregressive`` on an untrained
``resnet_ar`` (32 latents, 784 pixels) with the head run on the rows above and columns beside a
pixel (what the package does) and on the same rows at full width (``window=False``), interleaved,
two repeats each; checks that both give the same means, and prints seconds and the ratio of the
best times.
"""

import sys

from harness import interleaved, machine

import numpy as np

from mnist_vae import inference, models


def main(batches):
    vae = models.build_vae(latent_dim=32, architecture="resnet_ar", seed=0)
    print(machine())
    print("| batch | whole rows (s) | window (s) | speed-up (best) |")
    print("| ---: | ---: | ---: | ---: |")
    for b in batches:
        z = np.random.default_rng(0).standard_normal((b, 32)).astype("float32")
        means = {}

        def sampler(name, window):
            def step():
                means[name] = inference.sample_autoregressive(vae, z, seed=1, window=window)
            return step

        times = interleaved({"whole rows": sampler("whole rows", False), "window": sampler("window", True)}, 2)
        np.testing.assert_allclose(means["whole rows"], means["window"], atol=1e-5)
        rows, win = min(times["whole rows"]), min(times["window"])
        print(f"| {b} | {' / '.join(f'{t:.1f}' for t in times['whole rows'])} | "
              f"{' / '.join(f'{t:.1f}' for t in times['window'])} | {rows / win:.2f}x |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [16, 100, 500])
