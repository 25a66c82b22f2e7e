#!/usr/bin/env bash
# Issue 11: every stream x the closed-form methods, the joint probe and 1-bit adapters at seed 0, then the
# adapters' headline rows at seeds 1 and 2, then the table for BENCHMARKS.md. Finished cells are skipped, so a
# rerun resumes. Usage: benchmarks/issue11.sh [RUNS]   (hours on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/issue11}
export OMP_WAIT_POLICY=PASSIVE LIFELONG_THREADS=${LIFELONG_THREADS:-2} HF_HUB_OFFLINE=1
STREAMS=${STREAMS:-clinc150,clinc150:random,wordnet,fashion-mnist}
CACHE=${LIFELONG_CACHE:-$HOME/.cache/lifelong/features}
.venv/bin/lifelong bench --benchmarks "$STREAMS" --methods ncm,lda,ranpac,analytic,probe,adapters:1bit \
    --seed 0 --cache-dir "$CACHE" --out "$RUNS/seed0"
for seed in ${SEEDS:-1 2}; do
  .venv/bin/lifelong bench --benchmarks "$STREAMS" --methods adapters:1bit --seed "$seed" --cache-dir "$CACHE" \
      --out "$RUNS/seed$seed"
done
.venv/bin/python benchmarks/routing_table.py "$RUNS"
