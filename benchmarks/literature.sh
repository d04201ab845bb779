#!/usr/bin/env bash
# Reproduce the "literature preset" rows of BENCHMARKS.md: train the preset, then evaluate it on
# the binarised test set (binarised once with data.HELD_OUT_BINARIZE_SEED) at K=1000 and K=5000.
#
#   bash benchmarks/literature.sh [RUN_DIR] [K1000_IMAGES] [K5000_IMAGES]
#
# Defaults evaluate the first 500 test images at K=1000 and the first 200 at K=5000 (the full
# 10,000 at K=5000 takes many hours on a 2-core CPU; pass 10000 to run it on a faster machine, or
# use KERAS_BACKEND=torch or jax on a GPU). Each evaluation is kept as evaluation-K<k>-N<n>.json.
set -euo pipefail
run=${1:-runs/literature}
n1000=${2:-500}
n5000=${3:-200}

if [ ! -f "$run/metrics.json" ]; then
  if [ -f "$run/config.json" ]; then
    vae train --resume --out "$run" --quiet        # an interrupted training continues
  else
    vae train --preset literature --out "$run" --quiet
  fi
fi
for spec in "1000 $n1000" "5000 $n5000"; do
  set -- $spec
  vae evaluate "$run" --iw-samples "$1" --limit "$2"
  cp "$run/evaluation.json" "$run/evaluation-K$1-N$2.json"
done
python3 -c "import json; print(json.load(open('$run/metrics.json'))['fit_seconds_this_session'], 's of training')"
