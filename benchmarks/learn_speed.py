"""Issue 12: wall time of `lifelong learn` (process start included) adding each CLINC150 domain to a model store.

Exports the domains as a user's files (benchmarks/export_clinc150.py), creates an empty `adapters` store, then runs
`lifelong learn STORE --data DOMAIN.jsonl --eval DOMAIN.heldout.jsonl` once per domain, in order, timing each command
from process start to exit. Prints (and writes to OUT/learn_speed.json) the seconds of every learn and the store's
bytes. Usage: python benchmarks/learn_speed.py [--out runs/learn-speed] [--tasks 10] [--no-cache] [-- extra `learn` flags]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "learn-speed")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--no-cache", action="store_true",
                    help="delete the store's held-out cache (MODEL/cache) before each learn: the cost without it")
    ap.add_argument("extra", nargs="*", help="extra flags for `lifelong learn` (after --)")
    args = ap.parse_args()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "LIFELONG_THREADS": os.environ.get("LIFELONG_THREADS", "2"),
           "HF_HUB_OFFLINE": "1"}
    files, store = args.out / "tasks", args.out / "model"
    shutil.rmtree(store, ignore_errors=True)
    subprocess.run([str(BIN / "python"), str(ROOT / "benchmarks" / "export_clinc150.py"), str(files)], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    subprocess.run([str(BIN / "lifelong"), "init", str(store), "--method", "adapters"], check=True, env=env)
    from lifelong.data import clinc150

    domains = list(clinc150.load()[1])[: args.tasks]
    rows = []
    for domain in domains:
        cmd = [str(BIN / "lifelong"), "learn", str(store), "--data", str(files / f"{domain}.jsonl"),
               "--eval", str(files / f"{domain}.heldout.jsonl"), "--name", domain, *args.extra]
        if args.no_cache:
            shutil.rmtree(store / "cache", ignore_errors=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"error: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        entry = json.loads((store / "manifest.json").read_text())["versions"][-1]
        rows.append({"task": domain, "seconds": round(seconds, 2), "learn_seconds": round(entry["learn_seconds"], 2),
                     "train_examples": entry["tasks"][-1]["train_examples"], "new_bytes": entry["new_bytes"]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": int(env["LIFELONG_THREADS"]),
              "held_out_cache": not args.no_cache, "learns": rows,
              "median_seconds": sorted(r["seconds"] for r in rows)[len(rows) // 2]}
    (args.out / "learn_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "learns"}))


if __name__ == "__main__":
    main()
