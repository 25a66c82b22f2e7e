"""Does a random nonlinear expansion before the projection help the frozen class model, at the same bytes? A
diagnostic for issue 11 (BENCHMARKS.md): the class model's input (`class_features`: every block's pooled output,
as `adapters` builds it), either projected to 960 as today, or first expanded by a seeded Gaussian matrix and a ReLU
(RanPAC's random features) to `width`, then projected to 960. LDA (`GaussianClassModel`) with the shrinkage chosen
by held-out hits summed over tasks, as `adapters` does; class accuracy / routing top-1 (the true task holds the best
class) of the final model on test, for several seeds of the expansion. Trains no adapter.

    python benchmarks/class_model_expansion.py clinc150:random 0
"""

import sys
import time

import torch
import torch.nn.functional as F

from lifelong.backbones import default_backbone, load_backbone
from lifelong.data import load_stream
from lifelong.devices import set_threads
from lifelong.methods.gaussian import SHRINKAGES, GaussianClassModel
from lifelong.methods.base import held_out
from lifelong.methods.topblock import SplitCache

WIDTHS = (0, 1920, 2688, 3840)  # 0: no expansion (today)
SEEDS = (0, 1, 2)


def expand(x: torch.Tensor, width: int, seed: int) -> torch.Tensor:
    if not width:
        return x
    w = torch.randn(x.shape[1], width, generator=torch.Generator().manual_seed(1000 + seed)) / x.shape[1] ** 0.5
    return torch.relu(x @ w)


def class_inputs(name: str, seed: int):
    """(stream, {(task, split): (class input, labels)} for splits train / held / test, task of each class): the
    class model's input as `adapters` builds it, split as `adapters` splits a task."""
    set_threads()
    stream = load_stream(name, seed, None, "text", "label", None, None, None)
    backbone = load_backbone(default_backbone(stream))
    cache = SplitCache(backbone, 1)
    t0 = time.time()
    data = {}
    for t in stream:
        train, held = held_out(t)  # as `adapters` splits it: the val split, else a tenth of the training data
        for s, ex in (("train", train), ("held", held), ("test", t.test)):
            data[t.index, s] = (cache.class_input(ex.inputs), ex.labels)
            cache.clear()
    print(f"{name}: frozen pass {time.time() - t0:.0f} s, class input {data[0, 'train'][0].shape[1]} wide", flush=True)
    return stream, data, torch.cat([torch.full((len(t.classes),), t.index) for t in stream])


def main(name: str, seed: int) -> None:
    stream, data, task_of = class_inputs(name, seed)
    for width in WIDTHS:
        for s in SEEDS if width else (0,):
            model, hits = None, dict.fromkeys(SHRINKAGES, 0)
            for t in stream:
                x = expand(data[t.index, "train"][0], width, s)
                if model is None:
                    model = GaussianClassModel(x.shape[1], 960, seed)
                model.add(*model.task_statistics(x, data[t.index, "train"][1], t.classes))
                xv = model.transform(expand(data[t.index, "held"][0], width, s))
                for k in SHRINKAGES:
                    hits[k] += int((model.scores(xv, k).argmax(1) == data[t.index, "held"][1]).sum())
            chosen = max(SHRINKAGES, key=lambda k: (hits[k], -SHRINKAGES.index(k)))
            xt = model.transform(torch.cat([expand(data[t.index, "test"][0], width, s) for t in stream]))
            yt = torch.cat([data[t.index, "test"][1] for t in stream])
            pred = model.scores(xt, chosen).argmax(1)
            print(f"{name} width {width or 'none'} seed {s}: shrinkage {chosen}, class acc "
                  f"{(pred == yt).float().mean() * 100:.2f}, routing {(task_of[pred] == task_of[yt]).float().mean() * 100:.2f}",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "clinc150:random", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
