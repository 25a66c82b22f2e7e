"""Issue 11's table: stream x method x final accuracy x routing x bytes, from finished runs.

Usage: python benchmarks/routing_table.py runs/issue11            (a `lifelong bench` directory, or results.json
files). Rows of the same stream and method at several seeds are folded into one: mean, and range in brackets.
Routing for methods that do not route is that of their scores: the task of the best class in each task.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path


def pct(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    mean = 100 * sum(xs) / len(xs)
    return f"{mean:.2f}" if len(xs) == 1 else f"{mean:.2f} ({100 * min(xs):.2f}-{100 * max(xs):.2f})"


def main(args):
    paths = [p for a in args for p in (sorted(Path(a).glob("**/results.json")) if Path(a).is_dir() else [Path(a)])]
    groups = defaultdict(list)
    for p in paths:
        r = json.loads(p.read_text())
        groups[(r["config"]["benchmark"], r.get("label") or r["method"])].append(r)
    print("| stream | method | seeds | final acc % | routing top-1 % | routing top-k % | given task % | "
          "bytes/task (mean) | shared bytes | run s |")
    print("|---|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for (bench, method), rs in sorted(groups.items()):
        per_task = [sum(r["bytes_per_task"]) / len(r["bytes_per_task"]) for r in rs]
        k = rs[0].get("routing_top_k", "k")
        print(f"| {bench} | {method} | {','.join(str(r['config']['seed']) for r in rs)} | "
              f"{pct([r['final_accuracy'] for r in rs])} | {pct([r.get('routing_accuracy') for r in rs])} | "
              f"{pct([r.get('routing_top_k_accuracy') for r in rs])} (k={k}) | "
              f"{pct([r.get('accuracy_given_task') for r in rs])} | {sum(per_task) / len(per_task):,.0f} | "
              f"{rs[0].get('shared_bytes', 0):,} | {sum(r['total_seconds'] for r in rs) / len(rs):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
