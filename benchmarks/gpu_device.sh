#!/usr/bin/env bash
# BENCHMARKS.md's GPU rows on a lent GPU machine in one call: the seed recipe's 30 epochs and
# K=5000 on the full test set, then the literature preset's, with `benchmarks/gpu.py`.
# Tested on the CPU with TensorFlow hidden, as on the GPU machines (`tests/test_benchmarks.py`).
#
# A GPU loan is short (15 minutes, start-up included) and the machine is bare: it
# has torch, jax, numpy, h5py, rich, absl-py and ml-dtypes, not TensorFlow, Keras, namex or
# optree, and no network. So the wheels are fetched here first, for its Python 3.12:
#
#   bash benchmarks/gpu_device.sh wheels            # here: .whl/ (git ignores it)
#
# and the device's command (its `carry` names .whl) runs the rest there, from this checkout's src/:
#
#   bash benchmarks/gpu_device.sh run /tmp/gpu "$OUT"
#
# `run WORK RESULTS [gpu.py options]` trains and evaluates in WORK/seed and WORK/literature (many
# files: only RESULTS comes back from the device) and writes to RESULTS what is to be kept:
# versions.txt, gpu-seed.json and gpu-literature.json (gpu.py's rows) and each step's log. The
# literature step gets what is left of LITERATURE_SECONDS (default 420) and is cut off there, so
# the call ends inside the device's 10-minute limit with the seed row safe; an interrupted
# literature run leaves no row. Options after RESULTS go to both gpu.py calls (the tests pass a
# tiny setting). KERAS_BACKEND picks torch (default) or jax.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: bash benchmarks/gpu_device.sh wheels | run WORK RESULTS [gpu.py options]"

case "${1:-}" in
wheels)
  cd "$here"
  mkdir -p .whl
  # The device image's Python is 3.12 (KINDS.md); pins are this machine's versions.
  versions=$(python3 -c 'import importlib.metadata as m; print(" ".join(f"{p}=={m.version(p)}" for p in ("keras", "namex", "optree")))')
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $versions
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  ls .whl
  ;;
run)
  [ $# -ge 3 ] || { echo "$usage" >&2; exit 2; }
  work=$2 results=$3
  shift 3
  cd "$here"
  start=$SECONDS
  mkdir -p "$work" "$results"
  wheels=${GPU_WHEELS:-.whl}  # the tests name an empty folder: this machine has what they need
  if compgen -G "$wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 KERAS_BACKEND=${KERAS_BACKEND:-torch}
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python3 -c 'import sys, keras; print("python", sys.version.split()[0], "keras", keras.__version__, "backend", keras.backend.backend())'
    for package in torch jax; do
      python3 -c "import importlib.metadata as m; print('$package', m.version('$package'))" 2>/dev/null || true
    done
  } > "$results/versions.txt" 2>&1
  cat "$results/versions.txt"
  python3 "$here/benchmarks/gpu.py" "$work" --preset seed "$@" > "$results/gpu-seed.log" 2>&1 || status=$?
  tail -4 "$results/gpu-seed.log"
  [ -f "$work/gpu-seed.json" ] && cp "$work/gpu-seed.json" "$results/"
  left=$(( ${LITERATURE_SECONDS:-420} - (SECONDS - start) ))
  if [ "$left" -gt 30 ]; then
    timeout "$left" python3 "$here/benchmarks/gpu.py" "$work" --preset literature "$@" > "$results/gpu-literature.log" 2>&1 \
      || echo "literature: exit $? after $(( SECONDS - start )) s (124: cut off at LITERATURE_SECONDS)" | tee -a "$results/gpu-literature.log"
    tail -4 "$results/gpu-literature.log"
    [ -f "$work/gpu-literature.json" ] && cp "$work/gpu-literature.json" "$results/"
  else
    echo "literature: skipped, $left s left of LITERATURE_SECONDS" | tee "$results/gpu-literature.log"
  fi
  exit "${status:-0}"
  ;;
*)
  echo "$usage" >&2
  exit 2
  ;;
esac
