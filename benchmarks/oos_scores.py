"""Out-of-scope rejection of a saved CLINC150 `adapters` model with two scores: the best mixture probability, and
the learner's `confidence` (that probability times the cosine to the nearest class prototype). Each threshold is
calibrated on the val split plus the 100 out-of-scope val queries, then measured on test (4,500 in-scope, 1,000
out-of-scope queries). Usage: benchmarks/oos_scores.py runs/adapters-1bit-oos/model [--out FILE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from lifelong import oos
from lifelong.backbones import load_backbone
from lifelong.data import clinc150
from lifelong.data.task import Examples
from lifelong.methods import get


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--out")
    args = ap.parse_args()
    learner = get("adapters").load(args.model, load_backbone("all-MiniLM-L6-v2"))
    stream = clinc150.stream()
    val = Examples.concat([t.val for t in stream.tasks])
    test = Examples.concat([t.test for t in stream.tasks])

    def scored(texts):
        scores = learner.predict(list(texts))
        return scores, {"max probability": scores.max(-1).values, "confidence": learner.confidence(list(texts), scores)}

    val_scores, val_by = scored(val.inputs)
    test_scores, test_by = scored(test.inputs)
    _, oos_val = scored(stream.oos["val"])
    _, oos_test = scored(stream.oos["test"])
    val_hits, test_hits = val_scores.argmax(-1) == val.labels, test_scores.argmax(-1) == test.labels
    out = {}
    for name in val_by:
        threshold = oos.calibrate(val_by[name], val_hits, oos_val[name])
        r = {"val": dataclasses.asdict(oos.Rejection.measure(threshold, val_by[name], val_hits, oos_val[name])),
             "test": dataclasses.asdict(oos.Rejection.measure(threshold, test_by[name], test_hits, oos_test[name]))}
        out[name] = r
        print(f"{name:16s} val: in-scope {r['val']['in_scope_accuracy']:.4f} oos recall {r['val']['oos_recall']:.4f} | "
              f"test: in-scope {r['test']['in_scope_accuracy']:.4f} (no rejection "
              f"{r['test']['in_scope_accuracy_no_rejection']:.4f}) oos recall {r['test']['oos_recall']:.4f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
