"""Does a factorised covariance bring the frozen pass's width into the class model's bytes? A diagnostic for issue
11 (BENCHMARKS.md). LDA as `GaussianClassModel` (unit-normalised parts, shrinkage towards the mean variance chosen
by held-out hits summed over tasks), but the shared covariance kept as its top `rank` eigenpairs plus the exact
diagonal (low rank plus diagonal, fp16), updated task by task (the stored factors plus the task's exact scatter,
re-truncated), and class means quantised to `bits` bits per value (one fp32 scale per class). Prints class accuracy
and routing (the true task holds the best class) on test, the bytes of the shared state and of a 15-class task's means.

    python benchmarks/class_model_factorised.py clinc150:random 0
"""

import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from class_model_width import SHRINKAGES, frozen_parts  # noqa: E402


VARIANTS = {  # name: (parts, rank (0: full covariance), bits of the class means (8 or 4))
    "mean2-6, full covariance, int8 means": (["mean2", "mean3", "mean4", "mean5", "mean6"], 0, 8),
    "mean2-6, rank 240 + diagonal, 4-bit means": (["mean2", "mean3", "mean4", "mean5", "mean6"], 240, 4),
    "mean2-6, rank 240 + diagonal, int8 means": (["mean2", "mean3", "mean4", "mean5", "mean6"], 240, 8),
    "mean1-6 + final, rank 170 + diagonal, 4-bit means": (["mean6", "mean1", "mean2", "mean3", "mean4", "mean5",
                                                          "mean6"], 170, 4),
}


def quantise(means: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2 ** (bits - 1) - 1
    scale = (means.abs().amax(1, keepdim=True) / levels).clamp_min(1e-12)
    return (means / scale).round().clamp(-levels, levels) * scale


class Factorised:
    def __init__(self, dim: int, rank: int):
        self.dim, self.rank = dim, rank
        self.vectors = torch.zeros(dim, 0, dtype=torch.float64)
        self.values = torch.zeros(0, dtype=torch.float64)
        self.diagonal = torch.zeros(dim, dtype=torch.float64)
        self.full = torch.zeros(dim, dim, dtype=torch.float64)
        self.dof = 0.0

    def add(self, scatter: torch.Tensor, dof: float) -> None:
        total = self.dof + dof
        if not self.rank:
            self.full = ((self.full * self.dof + scatter) / total).half().double()
        else:
            merged = (self.vectors * self.values) @ self.vectors.T * self.dof + scatter
            values, vectors = torch.linalg.eigh(merged / total)
            self.values = values[-self.rank :].clamp_min(0).half().double()
            self.vectors = vectors[:, -self.rank :].half().double()
            self.diagonal = ((self.diagonal * self.dof + scatter.diagonal()) / total).half().double()
        self.dof = total

    def covariance(self) -> torch.Tensor:
        if not self.rank:
            return self.full
        low = (self.vectors * self.values) @ self.vectors.T
        return low + torch.diag((self.diagonal - low.diagonal()).clamp_min(0))

    def bytes(self) -> int:
        return self.dim * (self.dim + 1) if not self.rank else 2 * (self.dim * self.rank + self.rank + self.dim)


def solve(eigen, means, shrink):
    values, vectors = eigen
    values = values.clamp_min(0)
    inverse = 1 / ((1 - shrink) * values + shrink * values.mean().clamp_min(1e-12))
    weight = vectors @ (inverse[:, None] * (vectors.T @ means.T))
    return weight, -0.5 * (means * weight.T).sum(1)


def main(name: str, seed: int) -> None:
    stream, data, task_of = frozen_parts(name, seed)
    for variant, (names, rank, bits) in VARIANTS.items():
        def x(key):
            return torch.nn.functional.normalize(torch.cat([data[key][0][n] for n in names], 1).double(), dim=-1)

        dim = x((0, "train")).shape[1]
        cov, means, hits = Factorised(dim, rank), torch.zeros(0, dim, dtype=torch.float64), dict.fromkeys(SHRINKAGES, 0)
        for t in stream:
            xs, ys = x((t.index, "train")), data[t.index, "train"][1]
            m = torch.stack([xs[ys == c].mean(0) for c in t.classes])
            centred = xs - m[torch.tensor([t.classes.index(int(y)) for y in ys])]
            cov.add(centred.T @ centred, len(ys) - len(t.classes))
            means = torch.cat([means, quantise(m, bits)])
            eigen = torch.linalg.eigh(cov.covariance())
            for s in SHRINKAGES:
                w, b = solve(eigen, means, s)
                hits[s] += int(((x((t.index, "val")) @ w + b).argmax(1) == data[t.index, "val"][1]).sum())
        chosen = max(SHRINKAGES, key=lambda s: (hits[s], -SHRINKAGES.index(s)))
        xt = torch.cat([x((t.index, "test")) for t in stream])
        yt = torch.cat([data[t.index, "test"][1] for t in stream])
        w, b = solve(eigen, means, chosen)
        pred = (xt @ w + b).argmax(1)
        print(f"{variant} [{dim} wide, shared {cov.bytes():,} B, 15 class means {15 * dim * bits // 8:,} B, "
              f"shrinkage {chosen}]: class {(pred == yt).float().mean() * 100:.2f} / routing "
              f"{(task_of[pred] == task_of[yt]).float().mean() * 100:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "clinc150:random", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
