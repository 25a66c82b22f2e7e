#!/usr/bin/env bash
# Issue 12 on a lent GPU, in one command, in this order: the headline run (CLINC150, 10 tasks, default 1-bit
# `adapters`, seed 0, default settings); predicting the 4,500 test texts (a plain pass, `predict`, and requests of
# 256 texts: predictions per second); the device tests and every method's conformance check with the backbone on
# the GPU; the headline run again with bf16 training. Each step has a time limit, and a stopped step leaves the
# ones before it in $OUT.
#
# Prepare here:  .venv/bin/python benchmarks/device_pack.py pack        (writes .device/, about 58 MiB)
# Run there:     the device tool's run, command `bash benchmarks/gpu.sh`, carry [".device"], timeout_s 600
#                (about 5 minutes of work on an H100 is expected; nothing of it has been measured yet)
# Results come back under $OUT: gpu.txt, versions.txt, tests.txt, run-default.json, run-bf16.json, predict.json,
# log.txt. Locally, as a dry run of the steps: OUT=runs/gpu-dry DEVICE=cpu PYTHON=.venv/bin/python bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
step() { echo "== $(date +%T) $*"; }

[ -d .device/minilm ] || { echo "no .device/: run benchmarks/device_pack.py pack first, and carry .device"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" >"$OUT/gpu.txt"
step "wheels and the model"
if ! $PY -c "import pydantic" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/lifelong-site \
        .device/whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/lifelong-site:$PWD/src LIFELONG_DATA=$PWD/.device HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
$PY benchmarks/device_pack.py unpack /tmp/lifelong-minilm --site /tmp/lifelong-site || exit 1
$PY -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers',
transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA',
'cpus', torch.get_num_threads())" | tee "$OUT/versions.txt"

run() {  # NAME [ENV=VALUE ...]: one headline run, its results.json to $OUT/run-NAME.json
    local name=$1; shift
    step "run $name"
    env "$@" timeout 300 $PY -m lifelong.cli run --benchmark clinc150 --method adapters --seed 0 --device "$DEVICE" \
        --backbone /tmp/lifelong-minilm --out "/tmp/lifelong-run-$name" --overwrite -q || return 1
    cp "/tmp/lifelong-run-$name/results.json" "$OUT/run-$name.json"
    $PY -c "import json; r = json.load(open('$OUT/run-$name.json')); print('$name', 'final', r['final_accuracy'],
'seconds', r['total_seconds'], 'peak MB', r['peak_memory_mb'], 'epochs', r['chosen'].get('epochs'))"
}
# the issue's measurements first: what comes back from a command stopped at its limit is what $OUT holds by then
run default LIFELONG_AUTOCAST=auto

step "predict"
timeout 240 $PY benchmarks/predict_speed.py /tmp/lifelong-run-default/model --device "$DEVICE" \
    --backbone /tmp/lifelong-minilm --batch 256 --repeats 3 | tee "$OUT/predict.json"

step "tests: the device tests, and every method's conformance check with its backbone on $DEVICE"
LIFELONG_TEST_DEVICE=$DEVICE timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_devices.py \
    tests/test_conformance.py 2>&1 | tail -25 | tee "$OUT/tests.txt"

run bf16 LIFELONG_AUTOCAST=bf16
step "done"
