#!/usr/bin/env bash
# One CLINC150 row per method (issue 4): 10 tasks, all-MiniLM-L6-v2, seed 0. Finished runs are skipped.
# Usage: benchmarks/methods_grid.sh [RUNS]; METHODS="name[:--flag value ...];..." overrides the list.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
export OMP_WAIT_POLICY=PASSIVE LIFELONG_THREADS=${LIFELONG_THREADS:-2} HF_HUB_OFFLINE=1
DEFAULT="ewc:--epochs 1;lwf:--epochs 1;wa:--epochs 1;replay:--epochs 1;l2-1e4:--epochs 1 --set strength=10000"
IFS=';' read -ra cells <<< "${METHODS:-$DEFAULT}"
for cell in "${cells[@]}"; do
  name=${cell%%:*}; flags=""; [[ "$cell" == *:* ]] && flags=${cell#*:}
  method=${name%%-*}
  out="$RUNS/$name"
  [ -f "$out/results.json" ] && { echo "skip $out (done)"; continue; }
  echo "run $name: --method $method $flags"
  # shellcheck disable=SC2086
  .venv/bin/lifelong run --benchmark clinc150 --method "$method" $flags --seed 0 --out "$out" 2> "$out.log"
done
