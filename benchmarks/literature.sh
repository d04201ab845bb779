#!/usr/bin/env bash
# Reproduce the "literature preset" rows of BENCHMARKS.md: train the preset (or the factorised
# `resnet` under the same protocol), then evaluate it on the binarised test set (binarised once
# with data.HELD_OUT_BINARIZE_SEED) with the importance-weighted bound.
#
#   bash benchmarks/literature.sh [RUN_DIR] [ARCHITECTURE] [K] [IMAGES]
#
# Defaults: runs/literature, resnet_ar, K=1000, the full 10,000 test images. On a 2-core CPU that
# is hours of training and hours of evaluation; both survive a kill: run the same command again
# and training resumes from its last epoch, evaluation from its last saved batch
# (evaluation.partial.npz). Each finished evaluation is kept as evaluation-K<k>-N<n>.json.
# On a GPU, KERAS_BACKEND=torch or jax, and K=5000 (the published protocol).
# TRAIN_FLAGS and EVAL_FLAGS (environment) add flags to `vae train` and `vae evaluate`, e.g.
#   TRAIN_FLAGS="--pixel-layers 5 --precision mixed_bfloat16" EVAL_FLAGS="--precision mixed_bfloat16"
set -euo pipefail
run=${1:-runs/literature}
architecture=${2:-resnet_ar}
k=${3:-1000}
images=${4:-10000}

if [ ! -f "$run/metrics.json" ]; then
  if [ -f "$run/config.json" ]; then
    vae train --resume --out "$run" --quiet        # an interrupted training continues
  else
    # shellcheck disable=SC2086  # word splitting of the flags is the point
    vae train --preset literature --architecture "$architecture" ${TRAIN_FLAGS:-} --out "$run" --quiet
  fi
fi
if [ ! -f "$run/evaluation-K$k-N$images.json" ]; then
  # shellcheck disable=SC2086
  vae evaluate "$run" --iw-samples "$k" --limit "$images" ${EVAL_FLAGS:-}
  cp "$run/evaluation.json" "$run/evaluation-K$k-N$images.json"
fi
python3 - "$run" "$k" "$images" <<'EOF'
import json, sys
run, k, n = sys.argv[1:]
metrics = json.load(open(f"{run}/metrics.json"))
result = json.load(open(f"{run}/evaluation-K{k}-N{n}.json"))
print(f"{run}: test -ELBO {metrics['test']['loss']:.2f} (one sample, {metrics.get('test_images', 10000)} images); "
      f"K={k} on {result['images']} images: -ELBO {result['negative_elbo']:.2f}, IW-NLL {result['iw_nll']:.2f} "
      f"({result['iw_nll_bits_per_dim']:.4f} bits/dim; {result['seconds']} s of evaluation)")
EOF
