"""Issue 13: the frozen pass on 1 and on 2 processes (one thread each), on this machine, and the scaling efficiency.

Runs `lifelong run --benchmark clinc150 --method ncm` (no training: the run is the frozen pass over the training and
test texts, plus a few milliseconds of class means) with LIFELONG_THREADS=1, then the same with `--nproc 2` and
LIFELONG_THREADS=2 (one thread per process), one after the other, timing each from process start to exit, and
checks that both runs' accuracy matrices are equal. Efficiency = t1 / (2 x t2). Writes OUT/distributed_speed.json.

    python benchmarks/distributed_speed.py --out runs/distributed-speed [--method adapters]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "distributed-speed")
    ap.add_argument("--benchmark", default="clinc150")
    ap.add_argument("--method", default="ncm", help="adapters: the whole run shared (training, held-out choices)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for nproc in (1, 2):
        run_dir = args.out / f"nproc{nproc}"
        cmd = [str(ROOT / ".venv" / "bin" / "lifelong"), "run", "--benchmark", args.benchmark, "--method", args.method,
               "--seed", "0", "--out", str(run_dir), "--overwrite", "--no-save", "--nproc", str(nproc)]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "LIFELONG_THREADS": str(nproc),
               "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"error: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        result = json.loads((run_dir / "results.json").read_text())
        rows.append({"processes": nproc, "threads_per_process": 1, "seconds": round(seconds, 2),
                     "learn_seconds": round(sum(result["seconds_per_task"]), 2),
                     "eval_seconds": round(sum(result["eval_seconds_per_task"]), 2),
                     "final_accuracy": result["final_accuracy"], "accuracy_matrix": result["accuracy_matrix"]})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "accuracy_matrix"}), flush=True)
    same = rows[0]["accuracy_matrix"] == rows[1]["accuracy_matrix"]
    summary = {"benchmark": args.benchmark, "method": args.method,
               "final_accuracy_difference": rows[1]["final_accuracy"] - rows[0]["final_accuracy"],
               "machine": f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d %H:%M"),
               "runs": rows, "speedup": rows[0]["seconds"] / rows[1]["seconds"],
               "efficiency": rows[0]["seconds"] / (2 * rows[1]["seconds"]), "same_accuracy_matrix": same}
    (args.out / "distributed_speed.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))


if __name__ == "__main__":
    main()
