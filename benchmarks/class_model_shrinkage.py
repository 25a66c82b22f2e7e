"""The frozen class model of `adapters` alone, at every candidate covariance shrinkage and at the Oracle
Approximating Shrinkage (Chen et al. 2010: from the pooled covariance and its degrees of freedom alone): held-out
hits of each task as it is learned, then test class accuracy and routing (the true task holds the best class) of
the final model. A diagnostic for issue 11 (BENCHMARKS.md); it trains no adapter.

    python benchmarks/class_model_shrinkage.py clinc150:random 960
"""

import sys
import time

import torch

from lifelong.backbones import load_backbone
from lifelong.data import load_stream
from lifelong.devices import set_threads
from lifelong.methods.gaussian import GaussianClassModel
from lifelong.methods.topblock import SplitCache

SHRINKAGES = [0.6, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3]


def oas(model: GaussianClassModel) -> float:
    S, n = model.covariance, model.dof
    p = S.shape[0]
    mu, alpha = torch.trace(S) / p, (S**2).mean()
    return float(min((alpha + mu**2) / ((n + 1) * (alpha - mu**2 / p)), 1.0))


def main(name: str, max_dim: int, seed: int = 0) -> None:
    set_threads()
    stream = load_stream(name, seed, None, "text", "label", None, None, None)
    encoder = load_backbone()
    cache = SplitCache(encoder, encoder.model.config.num_hidden_layers - 2)  # the default: top 2 blocks adapted
    t0 = time.time()
    feats = {}
    for t in stream:
        for split in ("train", "val", "test"):
            ex = getattr(t, split)
            cache(ex.inputs)
            feats[t.index, split] = cache.class_input(ex.inputs), ex.labels
    print(f"frozen pass {time.time() - t0:.0f} s", flush=True)
    model = GaussianClassModel(feats[0, "train"][0].shape[1], max_dim, seed)
    task_of = torch.cat([torch.full((len(t.classes),), t.index) for t in stream])
    hits = dict.fromkeys(SHRINKAGES, 0)
    for t in stream:
        model.add(*model.task_statistics(*feats[t.index, "train"], t.classes))
        x, y = feats[t.index, "val"]
        row = {s: int((model.logits(x, s).argmax(1) == y).sum()) for s in SHRINKAGES}
        for s, h in row.items():
            hits[s] += h
        o = oas(model)
        print(f"task {t.index}: dof {model.dof:.0f}, OAS {o:.4f}, held-out hits "
              + " ".join(f"{s}:{h}" for s, h in row.items())
              + f" OAS:{int((model.logits(x, o).argmax(1) == y).sum())}", flush=True)
    x = torch.cat([feats[t.index, "test"][0] for t in stream])
    y = torch.cat([feats[t.index, "test"][1] for t in stream])
    print("summed held-out hits choose", max(SHRINKAGES, key=lambda s: (hits[s], -SHRINKAGES.index(s))))
    for s in [*SHRINKAGES, oas(model)]:
        pred = model.logits(x, s).argmax(1)
        print(f"final, shrinkage {s:.4f}: class accuracy {(pred == y).float().mean():.4f}, "
              f"routing {(task_of[pred] == task_of[y]).float().mean():.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "clinc150:random", int(sys.argv[2]) if len(sys.argv) > 2 else 960)
