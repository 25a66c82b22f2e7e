#!/usr/bin/env bash
# Issue targets for the `adapters` learner on CLINC150 (10 tasks, all-MiniLM-L6-v2, seed 0):
# adapter type x precision, then prediction time against one plain backbone pass. Usage: benchmarks/adapters_grid.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
export OMP_WAIT_POLICY=PASSIVE LIFELONG_THREADS=${LIFELONG_THREADS:-2} HF_HUB_OFFLINE=1
for combo in ${GRID:-lora:1bit lora:fp32 bottleneck:1bit bottleneck:fp32 lora:ternary lora:fp16}; do
  adapter=${combo%%:*}; precision=${combo##*:}
  out="$RUNS/adapters-$adapter-$precision"
  [ -f "$out/results.json" ] && { echo "skip $out (done)"; continue; }
  .venv/bin/lifelong run --benchmark clinc150 --method adapters --adapter "$adapter" --precision "$precision" \
    --seed 0 --out "$out" 2> "$out.log"
done
.venv/bin/python benchmarks/predict_speed.py "$RUNS/adapters-lora-1bit/model" | tee "$RUNS/predict_speed.json"
.venv/bin/python benchmarks/table.py "$RUNS"/*/results.json
