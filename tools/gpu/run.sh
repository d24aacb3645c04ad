#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one device call (about 10 minutes on an H100/H200):
#   GPT micro-benchmark (bf16), the targets table (`bench --targets`), the same compiled.
# On this machine: bash tools/gpu/fetch_wheels.sh; then the device tool's run with
#   command: bash tools/gpu/run.sh    carry: [".whl"]    timeout_s: 600
# Logs and JSON land in $OUT (the device tool brings them back), else in out/gpu/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
MAX_BATCH=${MAX_BATCH:-32}  # decode-pool blocks: the capacity search goes past 8 streams
# extra arguments, e.g. for a dry run of this script on a CPU:
#   DEVICE=cpu GPT_ARGS="--quick" BENCH_ARGS="--checkpoints tests/fixtures/pipeline/checkpoints --cfm-steps 3
#   --tokens 30 --targets-max 2 --targets-turns 2" COMPILE=0 bash tools/gpu/run.sh
read -r -a GPT_EXTRA <<<"${GPT_ARGS:---dtype bfloat16 --repeats 3}"
read -r -a BENCH_EXTRA <<<"${BENCH_ARGS:-}"

step() {  # name, seconds, command...: its output to $OUT/name.log, the end of it to the console
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T))"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "exit $?" >>"$OUT/$name.log"
    grep -v '^JSON' "$OUT/$name.log" | tail -25
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; git log --oneline -1;
  $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'; } >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
step gpt 90 $PY tools/bench/gpt.py --device "$DEVICE" "${GPT_EXTRA[@]}"
TARGETS=(-m realtime_tts.cli bench --targets --engine indextts2 --device "$DEVICE" --turns 2 --lengths 7,16,28
         --max-batch "$MAX_BATCH" "${BENCH_EXTRA[@]}")
step targets 240 $PY "${TARGETS[@]}" --out "$OUT/targets.json"
if [ "${COMPILE:-1}" = 1 ]; then
    step targets_compiled 200 $PY "${TARGETS[@]}" --compile --out "$OUT/targets_compiled.json"
fi
