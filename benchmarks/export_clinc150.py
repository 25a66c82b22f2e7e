"""Write CLINC150 as the files a user would bring to `lifelong learn`: one JSONL of training rows per domain, and
per domain a held-out JSONL (its val rows plus the out-of-scope val rows, labelled `oos`).

Usage: benchmarks/export_clinc150.py OUTDIR   (then see README, "Keep a model learning")
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lifelong.data import clinc150


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "clinc150-tasks")
    out.mkdir(parents=True, exist_ok=True)
    data, domains, oos = clinc150.load()
    seen: list[str] = []
    for domain, intents in domains.items():
        keep = set(intents)
        seen += intents
        rows = [{"text": t, "label": c} for t, c in data.train if c in keep]
        # held out: every domain learned so far (the threshold must fit the whole model) plus out-of-scope queries
        held = [{"text": t, "label": c} for t, c in data.val if c in set(seen)] + [{"text": t, "label": "oos"} for t in oos["val"]]
        (out / f"{domain}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (out / f"{domain}.heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
        print(f"{out / domain}.jsonl: {len(rows)} rows, {len(intents)} intents; held out {len(held)}")


if __name__ == "__main__":
    main()
