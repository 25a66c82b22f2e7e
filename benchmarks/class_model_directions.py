"""Each class's own directions beside the shared covariance, and choosing the class model's settings by held-out
likelihood. A diagnostic for issue 11 (BENCHMARKS.md): the frozen class model alone (`GaussianClassModel`, the
class input `adapters` builds), at a width and a number of 4-bit directions per class; (alpha, shrinkage) chosen on
the held-out data of each task as it arrives, summed over tasks, either by hits (the true class scores best) or by
log-likelihood (`log_density`); class accuracy / routing top-1 (the true task holds the best class) of the final
model on test. Trains no adapter.

    python benchmarks/class_model_directions.py clinc150:random 0
"""

import itertools
import sys

import torch
from class_model_expansion import class_inputs

from lifelong.methods.gaussian import ALPHAS, SHRINKAGES, GaussianClassModel

VARIANTS = ((960, 0), (768, 0), (768, 1), (768, 2), (768, 4))  # (width, directions per class); (960, 0): before


def main(name: str, seed: int) -> None:
    stream, data, task_of = class_inputs(name, seed)
    for width, rank in VARIANTS:
        model = GaussianClassModel(data[0, "train"][0].shape[1], width, seed, rank)
        grid = list(itertools.product(ALPHAS if rank else (0.0,), SHRINKAGES))
        hits, loglik = dict.fromkeys(grid, 0), dict.fromkeys(grid, 0.0)
        for t in stream:
            model.add(*model.task_statistics(*data[t.index, "train"], t.classes))
            x, y = model.transform(data[t.index, "held"][0]), data[t.index, "held"][1]
            for alpha, shrink in grid:
                hits[alpha, shrink] += int((model.scores(x, shrink, alpha).argmax(1) == y).sum())
                loglik[alpha, shrink] += model.log_density(x, y, shrink, alpha)
        xt = model.transform(torch.cat([data[t.index, "test"][0] for t in stream]))
        yt = torch.cat([data[t.index, "test"][1] for t in stream])

        def scored(setting):
            pred = model.scores(xt, setting[1], setting[0]).argmax(1)
            return float((pred == yt).float().mean() * 100), float((task_of[pred] == task_of[yt]).float().mean() * 100)

        def result(setting):
            acc, routing = scored(setting)
            return f"{acc:.2f} / {routing:.2f} (alpha {setting[0]}, shrinkage {setting[1]})"

        by_hits = max(grid, key=lambda k: (hits[k], -grid.index(k)))
        by_loglik = max(grid, key=lambda k: loglik[k])
        best = max(grid, key=lambda k: scored(k)[1])
        print(f"{name} width {width}, {rank} directions: by hits {result(by_hits)}; by log-likelihood "
              f"{result(by_loglik)}; best on test {result(best)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "clinc150:random", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
