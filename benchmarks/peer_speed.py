"""Issue 12: `lifelong` and the Avalanche peer on the same CLINC150 stream, one after the other in this script.

Runs `lifelong run --benchmark clinc150 --method adapters` (default 1-bit adapters, seed 0) and then the peer
harness's Avalanche `Naive` strategy (full fine-tuning, 2 epochs per task) on the same machine, and prints both wall
times (process start to exit), their ratio, both final accuracies and peak memories, as JSON (also written to
OUT/peer_speed.json). The peer needs its own venv (`bash ../shared/peers/avalanche/install.sh ~/.venv-avalanche`).

Usage: python benchmarks/peer_speed.py [--out runs/peer] [--peer-python ~/.venv-avalanche/bin/python]
       [--peers ../shared/peers] [--strategy naive] [--also "--epochs 3"] [-- extra `lifelong run` flags]
`--also FLAGS` (repeatable) times one more `lifelong run` with those flags added, each against the same peer run
(NAME=VALUE words among them set that run's environment: `--also LIFELONG_AUTOCAST=off`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], log: Path, env: dict) -> float:
    """Wall seconds of a command, its output to `log`; exits with its status if it fails."""
    t0 = time.perf_counter()
    with log.open("wb") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if rc:
        sys.exit(f"error: {' '.join(cmd)} exited {rc}; see {log}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "peer")
    ap.add_argument("--peer-python", default=str(Path.home() / ".venv-avalanche" / "bin" / "python"))
    ap.add_argument("--peers", type=Path, default=Path(os.environ.get("LIFELONG_PEERS", ROOT.parent / "shared" / "peers")))
    ap.add_argument("--strategy", default="naive")
    ap.add_argument("--skip-peer", action="store_true", help="time lifelong only (the peer's last run is reused)")
    ap.add_argument("--also", action="append", default=[], help="flags of one more lifelong run to time")
    ap.add_argument("extra", nargs="*", help="extra flags for `lifelong run` (after --)")
    args = ap.parse_args()
    harness = args.peers / "avalanche" / "avalanche_clinc.py"
    if not args.skip_peer and not (harness.exists() and Path(args.peer_python).exists()):
        sys.exit(f"error: peer harness {harness} or its python {args.peer_python} is missing (see its README)")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "LIFELONG_THREADS": os.environ.get("LIFELONG_THREADS", "2"),
           "HF_HUB_OFFLINE": "1"}
    result: dict = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "date": time.strftime("%Y-%m-%d %H:%M"),
                    "threads": int(env["LIFELONG_THREADS"]), "runs": []}
    for i, words in enumerate([[], *(f.split() for f in args.also)]):
        run_dir = args.out / f"lifelong{i}"
        # NAME=VALUE words set the run's environment (e.g. LIFELONG_AUTOCAST=off); the rest are flags
        assigned = dict(w.split("=", 1) for w in words if "=" in w and w.split("=", 1)[0].isupper())
        flags = [w for w in words if w.split("=", 1)[0] not in assigned]
        ours = [str(ROOT / ".venv" / "bin" / "lifelong"), "run", "--benchmark", "clinc150", "--method", "adapters",
                "--seed", "0", "--out", str(run_dir), "--overwrite", *args.extra, *flags]
        seconds = timed(ours, args.out / f"lifelong{i}.log", {**env, **assigned})
        mine = json.loads((run_dir / "results.json").read_text())
        result["runs"].append({"command": " ".join([*(f"{k}={v}" for k, v in assigned.items()), *ours[1:]]),
                               "seconds": seconds, "frozen_pass": mine["environment"].get("frozen_pass"),
                               "final_accuracy": mine["final_accuracy"], "peak_memory_mb": mine["peak_memory_mb"],
                               "train_seconds": sum(mine["seconds_per_task"]),
                               "eval_seconds": sum(mine["eval_seconds_per_task"])})
    peer_out = args.out / "avalanche"
    if not args.skip_peer:
        peer = [args.peer_python, str(harness), "--strategy", args.strategy, "--threads", env["LIFELONG_THREADS"],
                "--out", str(peer_out)]
        result["peer_command"] = " ".join(peer[1:])
        result["peer_seconds"] = timed(peer, args.out / "avalanche.log", env)
    theirs_file = peer_out / f"{args.strategy}.json"
    if theirs_file.exists():
        theirs = json.loads(theirs_file.read_text())
        result.update(peer=f"Avalanche {theirs.get('avalanche_version')} {args.strategy}",
                      peer_final_accuracy=theirs.get("final_acc"),
                      peer_peak_memory_mb=theirs.get("peak_rss_bytes", 0) / 2**20,
                      peer_train_seconds=theirs.get("train_time_s"), peer_eval_seconds=theirs.get("eval_time_s"))
        if "peer_seconds" in result:
            for run in result["runs"]:
                run["ratio_to_peer"] = run["seconds"] / result["peer_seconds"]
    text = json.dumps(result, indent=2)
    (args.out / "peer_speed.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
