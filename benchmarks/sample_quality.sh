#!/usr/bin/env bash
# Reproduce the sample-quality rows of BENCHMARKS.md: the MNIST classifier, the seed model and a
# conditional seed model, each scored with `vae evaluate --sample-quality` (10,000 samples).
#
#   bash benchmarks/sample_quality.sh [RUNS_DIR] [CONDITIONAL_EPOCHS]
#
# The classifier goes where `vae evaluate` looks for it (~/.cache/mnist-vae/classifiers/mnist.keras);
# an existing one is reused. Interrupted trainings continue with --resume.
set -euo pipefail
runs=${1:-runs}
cond_epochs=${2:-10}

classifier=${XDG_CACHE_HOME:-$HOME/.cache}/mnist-vae/classifiers/mnist.keras
[ -f "$classifier" ] || vae classifier train --dataset mnist --quiet

train() {  # train OUT [flags...]: train, or resume an interrupted run, unless finished
  local out=$1; shift
  if [ -f "$out/metrics.json" ]; then return; fi
  if [ -f "$out/config.json" ]; then vae train --resume --out "$out" --quiet; else vae train --out "$out" --quiet "$@"; fi
}
train "$runs/seed"                                               # python main.py's recipe
train "$runs/conditional" --conditional --epochs "$cond_epochs"  # the same, with the label
for run in "$runs/seed" "$runs/conditional"; do
  vae evaluate "$run" --sample-quality
done
