"""``vae evaluate``: a run's held-out -ELBO and importance-weighted NLL (``estimators``), or its sample quality.

A long evaluation (K=1000 on a CPU takes hours) saves its finished batches as it goes
(``Progress``), so a killed ``vae evaluate`` run again with the same arguments continues.
"""

import json
import math
import time

import numpy as np
from keras import ops

from mnist_vae import inference, losses
from mnist_vae.data import one_hot
from mnist_vae.estimators import bits_per_dim, importance_weighted


class Progress:
    """The per-image results of an evaluation's finished batches, kept in a run's ``evaluation.partial.npz``.

    ``key`` names everything the numbers depend on (split, K, batch size, seed, images, the
    model file); a saved file with another key is ignored and replaced. Draw j of a batch
    depends only on (seed, batch start, j) (``_noise``), so a continued evaluation gives exactly
    the uninterrupted numbers. Saved at most every ``save_every`` seconds, and by ``save``.
    """

    def __init__(self, path, key, slots, n, save_every=30.0):
        from mnist_vae.atomic import replace_atomically

        self._replace = replace_atomically
        self.path, self.key, self.save_every = path, json.dumps(key, sort_keys=True), save_every
        self.nll = np.full((slots, n), np.nan)
        self.reconstruction = np.full((slots, n), np.nan)
        self.seconds = 0.0  # evaluation time spent in earlier, interrupted processes
        self._started = self._saved_at = time.monotonic()
        self._dirty = False
        self._load()

    def _load(self):
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                if str(saved["key"]) != self.key or saved["nll"].shape != self.nll.shape:
                    return
                self.nll, self.reconstruction = saved["nll"], saved["reconstruction"]
                self.seconds = float(saved["seconds"])
        except Exception:  # missing, damaged or foreign (NumPy raises many types): start afresh; the first save replaces it
            pass

    @property
    def nbytes(self):
        """Size of the saved progress file, about: the two float64 result arrays (10 x 10,000 images: 1.6 MB)."""
        return self.nll.nbytes + self.reconstruction.nbytes + 4096

    @property
    def done(self):
        """Fraction of the (slot, image) results already held."""
        return float(np.isfinite(self.nll).mean()) if self.nll.size else 1.0

    def has(self, slot, start, stop):
        return bool(np.isfinite(self.nll[slot, start:stop]).all())

    def get(self, slot, start, stop):
        return self.nll[slot, start:stop], self.reconstruction[slot, start:stop]

    def record(self, slot, start, nll, reconstruction):
        self.nll[slot, start:start + len(nll)] = nll
        self.reconstruction[slot, start:start + len(nll)] = reconstruction
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.save_every:
            self.save()

    def save(self):
        """Write what is held, if anything is new, with the time spent so far (earlier processes' and this one's)."""
        if not self._dirty:
            return

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, key=np.array(self.key), nll=self.nll, reconstruction=self.reconstruction,
                         seconds=np.array(self.seconds + time.monotonic() - self._started))

        self._replace(write, self.path, ".npz")
        self._saved_at, self._dirty = time.monotonic(), False

    def remove(self):
        self.path.unlink(missing_ok=True)


MAX_IW_SAMPLES = 5000
# Images decoded at once (--batch-size x --chunk-size) at most: the default, 100 x 100, is what
# every published evaluation here used; more would need gigabytes per decoder pass.
MAX_DECODED_AT_ONCE = 10_000
SPLITS = ("test", "validation")


def check_arguments(split, k, batch_size, chunk_size, limit, seed, precision="float32"):
    """Raise ``UserError`` naming the first argument of ``evaluate_run`` out of its range."""
    from mnist_vae.config import BOUNDS, check_range
    from mnist_vae.errors import UserError
    from mnist_vae.models import PRECISIONS

    if split not in SPLITS:
        raise UserError(f"--split must be one of {list(SPLITS)}, got {split!r}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {list(PRECISIONS)}, got {precision!r}")
    ranges = [("--iw-samples", k, 1, MAX_IW_SAMPLES), ("--batch-size", batch_size, 1, MAX_DECODED_AT_ONCE),
              ("--chunk-size", chunk_size, 1, MAX_IW_SAMPLES), ("--seed", seed, *BOUNDS["seed"])]
    if limit is not None:
        ranges.append(("--limit", limit, 1, BOUNDS["limit"][1]))
    for flag, value, lo, hi in ranges:
        check_range(flag, value, lo, hi)
    if batch_size * min(chunk_size, k) > MAX_DECODED_AT_ONCE:
        raise UserError(f"--batch-size x --chunk-size is at most {MAX_DECODED_AT_ONCE:,} images decoded at once, "
                        f"got {batch_size} x {min(chunk_size, k)}; lower one of them")


# Free space an evaluation asks for besides its progress file: evaluation.json is a few kB per class.
EVALUATION_BYTES = 1_000_000


def evaluate_run(run_dir, split="test", k=1000, batch_size=100, chunk_size=100, limit=None, seed=0, data_dir=None,
                 precision="float32"):
    """Evaluate a finished run on a held-out split; writes ``evaluation.json`` and returns its content.

    Holds the run's lock, and checks that ``evaluation.json`` can be written before the long part.
    ``precision`` is the compute precision of encoder and decoder (``models.PRECISIONS``); the
    log-weights and their sums are float32 in both.
    """
    from mnist_vae.lock import locked
    from mnist_vae.rundir import RunDir

    check_arguments(split, k, batch_size, chunk_size, limit, seed, precision)
    run = RunDir(run_dir)
    config = run.load_config()  # a clear error for a folder that is not a run, before anything is written
    with locked(run, "vae evaluate"):
        run.check_writable()
        run.check_free_space(EVALUATION_BYTES)
        return _evaluate_locked(run, config, split, k, batch_size, chunk_size, limit, seed, data_dir, precision)


def _evaluate_locked(run, config, split, k, batch_size, chunk_size, limit, seed, data_dir, precision):
    import sys

    from mnist_vae.data import HELD_OUT_BINARIZE_SEED, held_out_images, load_splits
    from mnist_vae.atomic import write_json_atomic
    from mnist_vae.rundir import load_inference_model

    vae = load_inference_model(run, precision)
    splits = load_splits(config.dataset, config.validation_size, limit=1, data_dir=data_dir)
    chosen = getattr(splits, split)
    # Binarise the whole split before --limit, so a subset sees the same pixels as the full set.
    images, labels = held_out_images(chosen.images, config.binarize)[:limit], chosen.labels[:limit]

    start = time.perf_counter()
    stat = run.vae.stat()  # a retrained model invalidates saved progress
    key = {"split": split, "iw_samples": k, "batch_size": batch_size, "seed": seed, "images": len(images),
           "binarize": config.binarize, "model": [stat.st_size, stat.st_mtime_ns], "precision": precision}
    progress = Progress(run.evaluation_partial, key, max(vae.num_classes, 1), len(images))
    run.check_free_space(EVALUATION_BYTES + 2 * progress.nbytes)  # the saved file and its replacement at once
    if progress.done:
        print(f"vae evaluate: continuing the interrupted evaluation in {run.evaluation_partial} "
              f"({progress.done:.0%} done)", file=sys.stderr)
    try:
        nll, reconstruction, extra = _iw_terms(vae, images, labels, k, batch_size, chunk_size, seed, progress)
    finally:  # interrupted (Ctrl-C, out of memory): keep what is done for the next try
        progress.save()
    z_mean, z_log_var = inference.encode(vae, images, labels, batch_size=500)
    # predict returns NumPy arrays; tensors again, since NumPy-tensor arithmetic fails on torch.
    kl_dims = losses.kl_per_dimension(ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var))
    kl_dims = ops.convert_to_numpy(kl_dims).astype(np.float64)  # (n, L)
    kl = kl_dims.sum(axis=1)
    seconds = progress.seconds + time.perf_counter() - start  # with earlier, interrupted tries
    decoded = len(images) * k * max(vae.num_classes, 1)  # a conditional model is scored under every label
    negative_elbo = reconstruction + kl

    def summary(mask):
        return {
            "negative_elbo": float(negative_elbo[mask].mean()),
            "reconstruction_loss": float(reconstruction[mask].mean()),
            "kl_loss": float(kl[mask].mean()),
            "iw_nll": float(nll[mask].mean()),
            "images": int(mask.sum()),
        }

    everything = np.ones(len(images), bool)
    result = {
        "dataset": config.dataset,
        "split": split,
        "images": len(images),
        "protocol": vae.observation.protocol(config.binarize, HELD_OUT_BINARIZE_SEED, split),
        "binarize": config.binarize,
        "iw_samples": k,
        "seed": seed,
        "precision": precision,
        "likelihood": vae.likelihood,
        "units": f"nats per image on the {vae.geometry.describe()} (bits_per_dim: bits per scored sub-pixel)",
        "conditional": vae.conditional,
        **summary(everything),
        **extra,
        "iw_nll_bits_per_dim": float(bits_per_dim(nll.mean(), vae.geometry.scored_dims)),
        "per_class": {
            splits.spec.class_names[c]: summary(labels == c) for c in np.unique(labels)
        },
        "active_units": int(inference.active_units(z_mean).sum()),
        "kl_per_dimension": [float(v) for v in kl_dims.mean(axis=0)],
        # The encoder's ReLU Dense layers (the seed's 16-unit bottleneck): units 0 on every image.
        "dead_relu_units": {name: {"dead": dead, "units": units} for name, (dead, units) in inference.dead_relu_units(
            vae.encoder, vae.encoder_inputs(images, one_hot(labels, vae.num_classes) if vae.conditional else None)
        ).items()},
        "seconds": round(seconds, 3),  # 3 places: a tiny evaluation on a fast machine is not 0.0 s
        # images x importance samples (x labels) decoded per second, the whole evaluation's wall time
        "samples_per_second": round(decoded / max(seconds, 1e-9)),
    }
    write_json_atomic(run.evaluation, result)
    progress.remove()
    return result


def _iw_terms(vae, images, labels, k, batch_size, chunk_size, seed, progress):
    """Per-image IW-NLL and reconstruction term (n,) each, and the conditional model's extra summaries."""
    if not vae.conditional:
        return (*importance_weighted(vae, images, k, batch_size, chunk_size, seed, progress=progress), {})
    # -log p(x | y) for each label y (the same noise for every label), then
    # -log p(x) = -log sum_y p(y) p(x | y) with a uniform p(y), by log-sum-exp.
    per_label = [importance_weighted(vae, images, k, batch_size, chunk_size, seed, labels=c, progress=progress,
                                     slot=c)
                 for c in range(vae.num_classes)]
    log_px_y = -np.stack([nll_c for nll_c, _ in per_label])  # (classes, n)
    rows = np.arange(len(images))
    nll_given_label = -log_px_y[labels, rows]
    reconstruction = np.stack([rec for _, rec in per_label])[labels, rows]
    nll = -(np.logaddexp.reduce(log_px_y, axis=0) - math.log(vae.num_classes))
    extra = {"iw_nll_given_label": float(nll_given_label.mean()),
             "label_posterior_accuracy": float((log_px_y.argmax(axis=0) == labels).mean())}
    return nll, reconstruction, extra


def sample_quality_run(run_dir, classifier_path=None, seed=0, data_dir=None, samples=None):
    """``vae evaluate DIR --sample-quality``: ``quality.sample_quality`` of the run's final model, into ``sample_quality.json``."""
    from mnist_vae import quality
    from mnist_vae.config import BOUNDS, check_range
    from mnist_vae.atomic import write_json_atomic
    from mnist_vae.lock import locked
    from mnist_vae.rundir import RunDir, load_inference_model

    check_range("--seed", seed, *BOUNDS["seed"])
    samples = quality.SAMPLES if samples is None else samples
    check_range("--samples", samples, 200, 50_000)
    run = RunDir(run_dir)
    config = run.load_config()
    with locked(run, "vae evaluate"):
        vae = load_inference_model(run)
        classifier = quality.load_classifier(config.dataset, classifier_path)
        run.check_writable()
        run.check_free_space(EVALUATION_BYTES)
        result = quality.sample_quality(vae, config, classifier, n=samples, seed=seed, data_dir=data_dir)
        write_json_atomic(run.sample_quality, result)
    return result


def format_table(result):
    """A plain-text table of an ``evaluate_run`` result."""
    lines = [
        f"{result['dataset']} {result['split']} split, {result['images']} images, K={result['iw_samples']}, "
        f"seed {result['seed']}, {result.get('precision', 'float32')} ({result['seconds']} s, "
        f"{result.get('samples_per_second', 0):,} images x samples per second)",
        f"{'':>14} {'-ELBO':>9} {'recon':>9} {'KL':>7} {'IW-NLL':>9}",
    ]
    rows = [("all", result)] + list(result["per_class"].items())
    for name, r in rows:
        lines.append(f"{name:>14} {r['negative_elbo']:9.2f} {r['reconstruction_loss']:9.2f} "
                     f"{r['kl_loss']:7.2f} {r['iw_nll']:9.2f}")
    dead = "".join(f"; dead ReLU units in {name}: {d['dead']}/{d['units']}"
                   for name, d in result.get("dead_relu_units", {}).items())
    lines.append(f"IW-NLL {result['iw_nll_bits_per_dim']:.4f} bits/dim; active units "
                 f"{result['active_units']}/{len(result['kl_per_dimension'])}{dead}")
    if result.get("conditional"):
        lines.append(f"conditional: IW-NLL is -log p(x) = -log mean_y p(x|y); -log p(x|y) with the true label "
                     f"{result['iw_nll_given_label']:.2f}; argmax_y p(x|y) is the label for "
                     f"{result['label_posterior_accuracy']:.1%} of images; -ELBO and terms are given the true label")
    return "\n".join(lines)
