#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one device call (about 10 minutes on an H100/H200),
# IndexTTS-2 and IndexTTS-2.5 side by side on the same card:
#   per model: `realtime-tts bench` (5 s of speech per segment, 3 segments, per stage) and the
#   targets table (`bench --targets`); then, as asked by STEPS, the GPT micro-benchmark (bf16,
#   IndexTTS-2) and the targets compiled.
# On this machine: bash tools/gpu/fetch_wheels.sh; then the device tool's run with
#   command: bash tools/gpu/run.sh    carry: [".whl"]    timeout_s: 600
# A second call on the same warm machine for what the first leaves out, e.g.
#   command: STEPS="gpt compiled" MODELS=indextts-2 bash tools/gpu/run.sh
# Logs and JSON land in $OUT (the device tool brings them back), else in out/gpu/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site  # also what an earlier call on this machine installed
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
MAX_BATCH=${MAX_BATCH:-32}  # decode-pool blocks: the capacity search goes past 8 streams
MODELS=${MODELS:-indextts-2 indextts-2.5}  # IndexTTS-2 first, as the baseline
STEPS=${STEPS:-pipeline targets}  # of: pipeline targets gpt compiled
# extra arguments, e.g. for a dry run of this script on a CPU (tiny random models):
#   DEVICE=cpu STEPS="pipeline targets gpt compiled" GPT_ARGS="--quick"
#   PIPE_ARGS="--tiny --seconds 0.4 --cfm-steps 2 --ref-seconds 1"
#   BENCH_ARGS="--tiny --cfm-steps 3 --targets-max 2 --targets-turns 2" bash tools/gpu/run.sh
read -r -a GPT_EXTRA <<<"${GPT_ARGS:---dtype bfloat16 --repeats 3}"
read -r -a PIPE_EXTRA <<<"${PIPE_ARGS:-}"
read -r -a BENCH_EXTRA <<<"${BENCH_ARGS:-}"

step() {  # name, seconds, command...: its output to $OUT/name.log, the end of it to the console
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T))"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "exit $?" >>"$OUT/$name.log"
    grep -v '^JSON' "$OUT/$name.log" | tail -25
}
wants() { [[ " $STEPS " == *" $1 "* ]]; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; git log --oneline -1;
  $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'; } >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
for model in $MODELS; do
    if wants pipeline; then  # same seconds of speech for both: 250 IndexTTS-2 codes, 125 IndexTTS-2.5 codes
        step "pipeline_$model" 75 $PY -m realtime_tts.cli bench --model "$model" --device "$DEVICE" --seconds 5 \
            --segments 3 "${PIPE_EXTRA[@]}" --out "$OUT/pipeline_$model.json"
    fi
    TARGETS=(-m realtime_tts.cli bench --targets --model "$model" --device "$DEVICE" --turns 2 --lengths 7,16,28
             --max-batch "$MAX_BATCH" "${BENCH_EXTRA[@]}")
    if wants targets; then
        step "targets_$model" 200 $PY "${TARGETS[@]}" --out "$OUT/targets_$model.json"
    fi
    if wants compiled; then
        step "targets_compiled_$model" 200 $PY "${TARGETS[@]}" --compile --out "$OUT/targets_compiled_$model.json"
    fi
done
if wants gpt; then
    step gpt 90 $PY tools/bench/gpt.py --device "$DEVICE" "${GPT_EXTRA[@]}"
fi
