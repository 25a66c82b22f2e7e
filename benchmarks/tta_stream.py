"""Issue 14: test-time adaptation methods on one shift stream, each in its own `lifelong adapt` process.

Runs `lifelong adapt --benchmark BENCH --protocol continual --method M` for every method (default source, bn,
tent, rmt, cotta), then the methods named by --reset again with `--protocol reset` (the no-collapse check compares
the last corruption of the continual stream with the same corruption adapted from the source), and prints a
markdown table: mean error, error on the first and last corruption, seconds per batch, wall time, peak memory.
Runs already finished in OUT are kept (rerun to resume); plots of all continual runs go to OUT.

Usage: python benchmarks/tta_stream.py --out runs/tta [--methods source,bn,tent,rmt,cotta] [--reset rmt]
       [-- extra `lifelong adapt` flags, e.g. --images 200 --cache-dir ~/.cache/lifelong]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "tta")
    ap.add_argument("--methods", default="source,bn,tent,rmt,cotta")
    ap.add_argument("--reset", default="rmt", help="methods also run with --protocol reset")
    ap.add_argument("--benchmark", default="fashion-mnist-c")
    ap.add_argument("extra", nargs="*", help="flags for every `lifelong adapt`")
    args = ap.parse_args()
    cells = [(m, "continual") for m in args.methods.split(",") if m]
    cells += [(m, "reset") for m in args.reset.split(",") if m]
    results = {}
    for method, protocol in cells:
        out = args.out / f"{method}-{protocol}"
        if not (out / "results.json").exists():
            cmd = [sys.executable, "-m", "lifelong.cli", "adapt", "--benchmark", args.benchmark, "--method", method,
                   "--protocol", protocol, "--out", str(out), "--overwrite", *args.extra]
            args.out.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            with (args.out / f"{method}-{protocol}.log").open("wb") as log:
                rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            if rc:
                sys.exit(f"error: {' '.join(cmd)} exited {rc}; see {args.out / f'{method}-{protocol}.log'}")
            r = json.loads((out / "results.json").read_text())
            r["wall_seconds"] = time.perf_counter() - t0
            (out / "results.json").write_text(json.dumps(r, indent=1))
        results[(method, protocol)] = json.loads((out / "results.json").read_text())

    from lifelong.report.plots import error_by_corruption, error_curve

    continual = [r for (m, p), r in results.items() if p == "continual"]
    error_by_corruption(continual, args.out / "error_by_corruption.png")
    error_curve(continual, args.out / "error_curve.png")
    print("| method | protocol | mean error % | first corruption % | last corruption % | s per batch | wall s | peak MB |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for (method, protocol), r in results.items():
        errs = list(r["errors"].values())
        print(f"| {method} | {protocol} | {r['mean_error']:.2f} | {errs[0]:.2f} | {errs[-1]:.2f} | "
              f"{r['seconds_per_batch']:.3f} | {r.get('wall_seconds', r['total_seconds']):.0f} | {r['peak_memory_mb']:.0f} |")
    source = results.get(("source", "continual"))
    if source:
        print(f"\nsource on clean test images: {source['source']['clean_error']:.2f}% error")
    for (method, protocol), r in results.items():
        if protocol == "reset" and (method, "continual") in results:
            last = list(r["errors"])[-1]
            print(f"{method}: last corruption ({last}) continual {results[(method, 'continual')]['errors'][last]:.2f}% "
                  f"vs reset {r['errors'][last]:.2f}%")


if __name__ == "__main__":
    main()
