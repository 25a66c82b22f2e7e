"""Time predicting CLINC150's test set with a saved `adapters` model against one plain backbone pass.

Both start cold (no cached features) and run in this one process, alternating, so the ratio is fair on a
noisy shared machine. A third timing, in the same rotation, runs every routed task's adapter on every query (as
before `routing.needed` skipped the runners-up that cannot change the prediction), and the predictions of the two
are compared. With `--batch N`, the same rotation also times `predict` in requests of N texts (a server's
batches), reported as predictions per second.

Usage: python benchmarks/predict_speed.py RUN_DIR/model [--repeats 3] [--device auto] [--backbone NAME] [--batch N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from lifelong import routing
from lifelong.backbones import load_backbone
from lifelong.backbones.text import DEFAULT_TEXT_BACKBONE
from lifelong.devices import set_threads
from lifelong.data import clinc150
from lifelong.methods.adapters import Adapters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backbone", default=DEFAULT_TEXT_BACKBONE)
    ap.add_argument("--batch", type=int, default=0, help="also time requests of this many texts")
    args = ap.parse_args()
    set_threads()
    enc = load_backbone(args.backbone, device=args.device)
    texts = [x for t in clinc150.stream() for x in t.test.inputs]
    plain, routed, every, same, change, runner_up, batched = [], [], [], [], [], [], []
    needed = routing.needed

    def counted(first_scores, tlp, all_routed, first):  # `needed`, recording how often a runner-up still runs
        kept = needed(first_scores, tlp, all_routed, first)
        runner_up.append(float((kept.sum(1) > 1).float().mean()))
        return kept

    for _ in range(args.repeats):
        t0 = time.perf_counter()
        enc.encode(texts)
        plain.append(time.perf_counter() - t0)
        scores = {}
        for name, times in (("needed", routed), ("every", every)):
            routing.needed = counted if name == "needed" else (lambda first_scores, tlp, all_routed, first: all_routed)
            learner = Adapters.load(args.model, enc)  # fresh: nothing cached
            t0 = time.perf_counter()
            with torch.no_grad():
                scores[name] = learner.predict(texts)
            times.append(time.perf_counter() - t0)
        routing.needed = needed
        if args.batch:
            learner = Adapters.load(args.model, enc)
            t0 = time.perf_counter()
            with torch.no_grad():
                for start in range(0, len(texts), args.batch):
                    learner.predict(texts[start : start + args.batch])
            batched.append(time.perf_counter() - t0)
        same.append(torch.equal(scores["needed"].argmax(1), scores["every"].argmax(1)))
        top = [s.max(1).values for s in (scores["needed"], scores["every"])]
        change.append(float(((top[0] - top[1]) / top[1]).abs().max()))
    out = {
        "examples": len(texts),
        "tasks": len(learner.heads),
        "top_k": learner.config.top_k,
        "blocks": learner.config.blocks,
        "plain_backbone_seconds": statistics.median(plain),
        "adapters_predict_seconds": statistics.median(routed),
        "ratio": statistics.median(r / p for r, p in zip(routed, plain)),
        "every_routed_adapter_seconds": statistics.median(every),
        "every_routed_adapter_ratio": statistics.median(r / p for r, p in zip(every, plain)),
        "same_predictions": all(same),
        "max_relative_confidence_change": max(change),
        "share_of_queries_running_a_runner_up": runner_up[-1],  # one predict call per timing: the last one's
        "threads": torch.get_num_threads(),
        "device": str(enc.device) + (f" ({torch.cuda.get_device_name(enc.device)})" if enc.device.type == "cuda"
                                     else ""),
    }
    if args.batch:
        out.update({"batch": args.batch, "predictions_per_second": len(texts) / statistics.median(batched)})
    if enc.device.type == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(enc.device) / 2**20
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
