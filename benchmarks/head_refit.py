"""Refit the task heads of a saved CLINC150 `adapters` model on its frozen adapters, and compare final accuracy.

For each task the stored adapter is run over the task's training split and a fresh head is trained on those fixed
features (`methods.adapters.refit`, the adapter's epochs, lr and batch), once per seed; the rest of the model
(adapters, prototypes, routing) is unchanged. Prints final accuracy on val and test of the stored heads and of each
seed's refit heads, as JSON. Usage: benchmarks/head_refit.py MODEL [--seeds 4] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from lifelong.backbones import load_backbone
from lifelong.data import clinc150
from lifelong.data.task import Examples
from lifelong.methods import get
from lifelong.methods.topblock import refit, top_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out")
    args = ap.parse_args()
    learner = get("adapters").load(args.model, load_backbone("all-MiniLM-L6-v2"))
    stream = clinc150.stream()
    splits = {s: Examples.concat([getattr(t, s) for t in stream.tasks]) for s in ("val", "test")}

    def accuracy() -> dict[str, float]:
        return {s: round(float((learner.predict(list(e.inputs)).argmax(-1) == e.labels).float().mean()), 4)
                for s, e in splits.items()}

    stored = accuracy()
    features = []
    for t, task in enumerate(stream.tasks):
        hidden, _ = learner.cache(task.train.inputs)
        learner.top.set_active(t)
        features.append((top_features(learner.top, hidden), task.train.labels - learner.offsets[t], len(task.classes)))
    refits = []
    for seed in range(args.seeds):
        for t, (x, y, n) in enumerate(features):
            head = refit(x, y, n, learner.config, seed * 100 + t)
            with torch.no_grad():  # stored at fp16, as in a saved model
                head.weight.copy_(head.weight.half().float())
                head.bias.copy_(head.bias.half().float())
            learner.heads[t] = head.requires_grad_(False)
        refits.append(accuracy())
        print(f"seed {seed}: {refits[-1]}", flush=True)
    result = {"model": args.model, "precision": learner.config.precision, "stored_heads": stored,
              "refit": refits, **{f"refit_{s}_mean": round(statistics.mean(r[s] for r in refits), 4)
                                  for s in splits}}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
