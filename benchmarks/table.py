"""Markdown table of finished runs for BENCHMARKS.md. Usage: python benchmarks/table.py runs/*/results.json"""

import json
import sys
from pathlib import Path


def fmt_pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}"


def main(paths):
    print("| method | settings | final acc % | avg incr acc % | forgetting % | routing % | bytes/task (mean) | "
          "split (last task) | train s | total s | peak MB |")
    print("|---|---|--:|--:|--:|--:|--:|---|--:|--:|--:|")
    for p in paths:
        r = json.loads(Path(p).read_text())
        s = r["config"]["settings"]
        settings = ", ".join(f"{k}={s[k]}" for k in ("adapter", "precision", "rank", "blocks", "top_k", "epochs") if k in s)
        per_task = r["bytes_per_task"]
        last, prev = r["stored_bytes"][-1], (r["stored_bytes"][-2] if len(per_task) > 1 else {})
        split = ", ".join(f"{k} {v - prev.get(k, 0):,}" for k, v in last.items())
        print(f"| {r['method']} | {settings or '-'} | {fmt_pct(r['final_accuracy'])} | "
              f"{fmt_pct(r['average_incremental_accuracy'])} | {fmt_pct(r['forgetting'])} | "
              f"{fmt_pct(r.get('routing_accuracy'))} | {sum(per_task) / len(per_task):,.0f} | {split} | "
              f"{sum(r['seconds_per_task']):.0f} | {r['total_seconds']:.0f} | {r['peak_memory_mb']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
