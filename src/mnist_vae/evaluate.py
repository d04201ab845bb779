"""Held-out evaluation of a trained VAE: ELBO terms and the importance-weighted bound on -log p(x).

The importance-weighted bound (Burda et al., 2015) with K samples z_k ~ q(z|x):

    -log p(x) <= -log (1/K) sum_k p(x, z_k) / q(z_k | x)

It equals the negative ELBO (in expectation) for K = 1 and tightens towards -log p(x) as K grows.
Samples are processed in chunks whose log-sum-exp is folded into a running total, so memory does
not grow with K. A long evaluation (K=1000 on a CPU takes hours) saves its finished batches as it
goes (``Progress``), so a killed ``vae evaluate`` run again with the same arguments continues.
"""

import json
import math
import time

import keras
import numpy as np
from keras import ops

from mnist_vae import inference, losses
from mnist_vae.data import ImageBatches, keras_input, one_hot
from mnist_vae.models import AutoregressiveScorer


def evaluate_losses(vae, images, batch_size=128, labels=None, terms=None):
    """Mean negative ELBO (unweighted, whatever beta trained the model) and its terms over ``images``.

    One posterior sample per image; nats per image.

    Runs a fresh ``LossTerms`` model's ``predict`` rather than ``vae.evaluate``, whose compiled
    step keeps the precision it was traced with: this way a model switched to float32 after
    mixed-precision training is scored in float32. Compiled, not eager: the eager loop took
    66 s for a seed run's 70,000 images on the AVX2 CPU, this 44 s. The per-image terms are summed
    in float64 here rather than in a float32 metric. Scoring several sets, pass one ``LossTerms(vae)``
    as ``terms``: each new one traces its predict step again.
    """
    conditioning = one_hot(labels, vae.num_classes) if vae.conditional else None
    terms = (terms or LossTerms(vae)).predict(keras_input(ImageBatches(images, batch_size, labels=conditioning)), verbose=0)
    return {name: float(np.asarray(terms[name], np.float64).sum()) / len(images)
            for name in ("loss", "reconstruction_loss", "kl_loss")}


class LossTerms(keras.Model):
    """``vae``'s per-image ``loss_terms`` (unweighted) on one posterior sample, as a model to ``predict`` with."""

    def __init__(self, vae, **kwargs):
        super().__init__(**kwargs)
        self.vae = vae

    def call(self, inputs):
        """``inputs`` as ``vae`` takes them; a dict of (batch,) nats."""
        images = inputs["images"] if self.vae.conditional else inputs
        return self.vae.loss_terms(images, self.vae(inputs, training=False))


def log_weights(vae, x, z_mean, z_log_var, eps, y=None, scorer=None):
    """For K draws per image: (log p(x, z_k) - log q(z_k|x), log p(x|z_k)), each (K, B) nats.

    ``x`` (B, H, W, C) model-ready images; ``z_mean``, ``z_log_var`` (B, L) from the encoder;
    ``eps`` (K, B, L) standard normal noise; ``y`` (B, classes) one-hot labels of a conditional
    model, which then scores p(x, z | y) / q(z | x, y). An autoregressive decoder is run through
    ``scorer`` (a ``models.AutoregressiveScorer`` of it, made here if not given).
    """
    k, b, latent_dim = eps.shape
    z = z_mean[None] + ops.exp(0.5 * z_log_var)[None] * eps  # (K, B, L)
    z_flat = ops.reshape(z, (k * b, latent_dim))
    y_rep = _repeat(y, k) if vae.conditional else None
    if vae.autoregressive:
        # x given z in one pass; the head's image-only first layer once per image, not per draw.
        scorer = scorer or AutoregressiveScorer(vae.decoder, vae.pad)
        logits = scorer(vae.decoder_inputs(z_flat, None, y_rep, with_images=False), x, k)  # (K*B, H, W, P)
    else:
        logits = vae.decoder(vae.decoder_inputs(z_flat, None, y_rep), training=False)  # (K*B, H, W, P)
    # x broadcasts against the K decodings: (1, B, H, W, C) vs (K, B, H, W, P) -> (K, B).
    log_px_z = -losses.reconstruction_loss(x[None], ops.reshape(logits, (k, b, *logits.shape[1:])), vae.pad,
                                           vae.likelihood)
    log_pz = losses.standard_normal_log_prob(z)  # (K, B)
    log_qz = losses.gaussian_log_prob(z, z_mean[None], z_log_var[None])  # (K, B)
    return log_px_z + log_pz - log_qz, log_px_z


def _repeat(t, k):
    """(B, ...) -> (K*B, ...): K copies of the batch, copy-major (as z is flattened)."""
    return ops.reshape(ops.tile(t[None], (k,) + (1,) * len(t.shape)), (k * t.shape[0], *t.shape[1:]))


def _noise(seed, batch_start, first, last, batch, latent_dim):
    """(last - first, batch, L) draws; draw j of a batch depends only on (seed, batch_start, j).

    So the estimate is the same whatever the chunk size.
    """
    return np.stack([
        np.random.default_rng([seed, batch_start, j]).standard_normal((batch, latent_dim), dtype=np.float32)
        for j in range(first, last)
    ])


def importance_weighted(vae, images, k=1000, batch_size=100, chunk_size=100, seed=0, labels=None, progress=None,
                        slot=0, scorer=None):
    """Per-image IW bound on -log p(x) and Monte-Carlo reconstruction term, each (n,) nats.

    For a conditional model, the bound on -log p(x | y) with ``labels`` (n,) integers (or one
    label for all). Memory is O(batch_size * chunk_size) images whatever ``k``; chunks are
    combined with a numerically stable log-sum-exp. With a ``Progress``, batches it already
    holds (in row ``slot``) are taken from it, and each new one is recorded there. ``scorer``:
    see ``log_weights`` (a benchmark passes another to compare).
    """
    if k < 1 or batch_size < 1 or chunk_size < 1:
        raise ValueError("k, batch_size and chunk_size must be at least 1")
    latent_dim = vae.latent_dim
    conditioning = None
    if vae.conditional:
        conditioning = one_hot(np.broadcast_to(np.asarray(labels), (len(images),)), vae.num_classes)
    nll = np.empty(len(images), np.float64)
    reconstruction = np.empty(len(images), np.float64)
    if vae.autoregressive and scorer is None:
        scorer = AutoregressiveScorer(vae.decoder, vae.pad)
    for start in range(0, len(images), batch_size):
        stop = min(len(images), start + batch_size)
        if progress is not None and progress.has(slot, start, stop):
            nll[start:stop], reconstruction[start:stop] = progress.get(slot, start, stop)
            continue
        x = ops.convert_to_tensor(images[start:stop])
        b = stop - start
        y = None if conditioning is None else ops.convert_to_tensor(conditioning[start:stop])
        z_mean, z_log_var = vae.encoder(vae.encoder_inputs(x, y), training=False)  # q(z|x) fixed for the batch
        running = np.full(b, -np.inf)  # log sum_k w_k so far
        rec_sum = np.zeros(b)
        for first in range(0, k, chunk_size):
            last = min(k, first + chunk_size)
            eps = ops.convert_to_tensor(_noise(seed, start, first, last, b, latent_dim))
            log_w, log_px_z = log_weights(vae, x, z_mean, z_log_var, eps, y, scorer)
            chunk = ops.convert_to_numpy(ops.logsumexp(log_w, axis=0)).astype(np.float64)
            running = np.logaddexp(running, chunk)
            rec_sum -= ops.convert_to_numpy(ops.sum(log_px_z, axis=0)).astype(np.float64)
        nll[start:stop] = math.log(k) - running
        reconstruction[start:stop] = rec_sum / k
        if progress is not None:
            progress.record(slot, start, nll[start:stop], reconstruction[start:stop])
    return nll, reconstruction


class Progress:
    """The per-image results of an evaluation's finished batches, kept in a run's ``evaluation.partial.npz``.

    ``key`` names everything the numbers depend on (split, K, batch size, seed, images, the
    model file); a saved file with another key is ignored and replaced. Draw j of a batch
    depends only on (seed, batch start, j) (``_noise``), so a continued evaluation gives exactly
    the uninterrupted numbers. Saved at most every ``save_every`` seconds, and by ``save``.
    """

    def __init__(self, path, key, slots, n, save_every=30.0):
        from mnist_vae.rundir import replace_atomically

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


def bits_per_dim(nats, dims):
    """Nats per image of ``dims`` scored sub-pixels (``Geometry.scored_dims``) -> bits per sub-pixel."""
    return nats / (dims * math.log(2))


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
    from mnist_vae.rundir import RunDir, locked

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
    from mnist_vae.rundir import load_inference_model, write_json_atomic

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
    from mnist_vae.rundir import RunDir, load_inference_model, locked, write_json_atomic

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
