#!/usr/bin/env bash
# BENCHMARKS.md's CPU measurements for the CPU this runs on, one after the other, each into OUT.
# The rows depend on the CPU type (AVX-512 with BF16, or AVX2 only), so each is recorded with the
# CPU that gave it. The whole takes hours; start it in the background:
#
#   nohup bash benchmarks/this_cpu.sh OUT [SEEDS] > OUT.log 2>&1 &
#
# 1. cpu.txt: the CPU's model name and the flags the rows depend on;
# 2. compare.log: `compare.py --repeats 9`, throughput against the references (about 15 minutes
#    with AVX512_BF16, longer on AVX2);
# 3. time_to_quality.log: the default recipe for each of SEEDS (default "0 1 2") against the
#    keras-io-style reference fed NumPy arrays, as the example does, and fed without tf.data's
#    autotuner (its train step alone); both references train once, each seed once (about 12 and
#    30 minutes per 30-epoch training with AVX512_BF16 and AVX2);
# 4. epoch_stalls.log: whole-length epochs, with and without the autotuner's stalls;
# 5. eval_speed.log: K=1000 on 200 test images in float32 and bf16, on the first seed's model;
# 6. overheads.log: what runs around the training steps, projected to 30 epochs.
#
# `ONEDNN_MAX_CPU_ISA=AVX2 bash benchmarks/this_cpu.sh OUT`: the same rows with oneDNN's AVX2
# kernels on an AVX-512 CPU (float32, as `auto` picks there), a proxy for an AVX2-only CPU.
#
# A step whose command succeeds leaves OUT/STEP.done and is skipped by a later call, so a
# call that is cut off goes on where it stopped. A training that was cut off cannot be timed
# on from where it stopped: its seed starts again, in a fresh folder (OUT/ttq/default-tryN-seedS).
set -euo pipefail
out=${1:?usage: bash benchmarks/this_cpu.sh OUT [SEEDS]}
seeds=${2:-0 1 2}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"

describe_cpu() {
  grep -m1 'model name' /proc/cpuinfo || true
  # The family and model tell apart CPU generations that share the model name and these flags
  # (these VMs show "AMD EPYC" for all of them; family 26 model 2 trained twice as fast as an earlier one).
  echo "family/model: $(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')/$(grep -m1 '^model[[:space:]]' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')"
  echo "flags: $(grep -m1 -o -w 'avx2\|avx512f\|avx512_bf16\|avx512_vnni\|avx512_vp2intersect\|avx_vnni\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "cores: $(nproc)"
  # A cap makes oneDNN pick the kernels of an older instruction set on this CPU (and `auto` then
  # trains in float32 where the cap is below bf16): ONEDNN_MAX_CPU_ISA=AVX2 shows an AVX2-only
  # CPU's kernel choice, not its speed.
  echo "oneDNN ISA cap: ${ONEDNN_MAX_CPU_ISA:-${DNNL_MAX_CPU_ISA:-none}}"
}
# Rows of two CPUs (or caps) must not mix in one OUT: a later call on another kind of machine stops.
if [ -f "$out/cpu.txt" ] && ! describe_cpu | cmp -s - "$out/cpu.txt"; then
  echo "this_cpu.sh: $out holds the rows of another CPU or oneDNN cap ($out/cpu.txt); give a new OUT" >&2
  exit 2
fi
describe_cpu > "$out/cpu.txt"
cat "$out/cpu.txt"

step() {  # step NAME COMMAND...: run COMMAND into OUT/NAME.log unless OUT/NAME.done says it ran
  local name=$1; shift
  if [ -f "$out/$name.done" ]; then echo "$name: done before, skipped"; return; fi
  echo "$name: $(date -u +%H:%M:%S) $*"
  "$@" > "$out/$name.log" 2>&1
  touch "$out/$name.done"
}

try_number() {  # try_number PREFIX [SUFFIX]: the first N for which no earlier call left PREFIX-tryN[SUFFIX]
  local try=1
  while [ -e "$1-try$try${2:-}" ]; do try=$((try + 1)); done
  echo "$try"
}

step compare python "$here/compare.py" --repeats 9
for seed in $seeds; do
  name=default-try$(try_number "$out/ttq/default" "-seed$seed")  # time_to_quality.py trains into OUT/ttq/NAME-seedS
  step "time_to_quality-seed$seed" python "$here/time_to_quality.py" "$out/ttq" --seeds "$seed" --name "$name" \
    --reference-input numpy keras_input
done
step epoch_stalls python "$here/epoch_stalls.py"
first=${seeds%% *}
run=$(ls -d "$out"/ttq/default-try*-seed"$first" | sort -V | tail -n 1)
step eval_speed python "$here/eval_speed.py" "$run" --images 200 --k 1000 --repeats 1
step overheads python "$here/overheads.py" "$out/overheads-try$(try_number "$out/overheads")" --epochs 3
echo "all done: $(date -u +%H:%M:%S)"
