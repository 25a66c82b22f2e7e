"""A global class model from additive statistics: class means and one shared covariance (linear discriminant
analysis) on unit-normalised frozen features, kept without any example.

Why this model: in class-incremental learning each class arrives in exactly one task, so a task contributes its
classes' sums and counts and its own within-class scatter sum (x - mean)(x - mean)^T (from sums of x and of
x x^T, so that shards of a task add up too), and the model after task i is the one fitted jointly on tasks 0..i
(up to the fp16 rounding of the stored covariance). It scores every seen class
against every other, so it can tell apart related classes that arrived in different tasks better than a nearest-
prototype router (which ignores how features vary within classes). Its state is d x d (d <= 960), where ridge on
random features (RanPAC's head) keeps a 2048 x 2048 Gram matrix for about the same accuracy. What `adapters` gives
it is every block's pooled output, each part unit-normalised: when tasks share a domain the lower layers separate
related classes the final feature blurs. The comparisons (final feature alone, two layers, all six, projected or
not, other covariance shapes) are in BENCHMARKS.md, issue 11.

Features wider than `max_dim` are first projected by a fixed seeded Gaussian matrix (regenerated from the seed,
never stored): the shared covariance is the one state that grows with the square of the width, and `max_dim` 960
bounds it (upper triangle, fp16; fp16 covariance and int8 means change accuracy by no measurable amount:
BENCHMARKS.md, issue 11). The shrinkage of the covariance towards a scaled identity is chosen by the caller on held-out data
(see `SHRINKAGES`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sums import class_sums, means_of

# candidates for the covariance shrinkage, chosen on held-out data; the most regularised first, so that with no
# held-out evidence (a tie) the choice is the safe one
SHRINKAGES = (0.3, 1e-1, 1e-2, 1e-3)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 rows with one fp32 scale each: class means cost a byte per value (no accuracy change measured)."""
    scale = (x.abs().amax(1) / 127).clamp_min(1e-12).float()
    return (x / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.double() * scale.double()[:, None]


class GaussianClassModel:
    """In memory, the state is held as stored (means int8 per row, the covariance fp16), so a saved model
    predicts exactly what the trained one did; the additive update runs in float64 on those values."""

    def __init__(self, in_dim: int, max_dim: int = 960, seed: int = 0):
        self.dim = min(in_dim, max_dim) if max_dim else in_dim
        self.projection = None
        if self.dim < in_dim:
            g = torch.Generator().manual_seed(seed)
            self.projection = torch.randn(in_dim, self.dim, generator=g) / self.dim ** 0.5  # fp32: wide inputs
        self.means = torch.zeros(0, self.dim, dtype=torch.float64)
        self.counts = torch.zeros(0, dtype=torch.float64)
        self.covariance = torch.zeros(self.dim, self.dim, dtype=torch.float64)  # within-class, pooled
        self.dof = 0.0  # examples minus classes: the covariance's denominator
        self._solved: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
        self._eigen: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.means)

    def transform(self, feats: torch.Tensor) -> torch.Tensor:
        """The model's feature: projected (if wider than max_dim), then unit-normalised."""
        x = feats.float() @ self.projection if self.projection is not None else feats
        return F.normalize(x.double(), dim=-1)

    def task_statistics(self, feats: torch.Tensor, labels: torch.Tensor, classes: list[int]):
        """(sums [k, dim], counts [k], second moment sum x x^T [dim, dim]) of one task's new classes, in the
        model's feature. Sums over examples, so the statistics of a task's shards add up (several processes each
        summing their own share: `distributed.all_sum`) to those of the whole task."""
        x = self.transform(feats)
        return (*class_sums(x, labels, classes), x.T @ x)

    def add(self, sums: torch.Tensor, counts: torch.Tensor, second: torch.Tensor) -> None:
        """Append a task's classes (columns after the seen ones) and pool its within-class scatter
        (sum x x^T - sum_c n_c mu_c mu_c^T, in float64 on unit vectors) into the covariance."""
        counts = counts.double()
        means = means_of(sums.double(), counts)
        scatter = second.double() - sums.double().T @ means
        q, scale = quantize_rows(means)
        self.means = torch.cat([self.means, dequantize_rows(q, scale)])
        self.counts = torch.cat([self.counts, counts])
        dof = self.dof + float(counts.sum()) - len(counts)
        if dof > 0:
            pooled = (self.covariance * self.dof + scatter) / dof
            self.covariance = pooled.half().double()  # as stored
        self.dof = dof
        self._solved.clear()
        self._eigen = None

    def _solve(self, shrink: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigma^-1 mu and the bias, with Sigma shrunk towards its mean variance. From one eigendecomposition
        whose eigenvalues are clipped at zero: the covariance of few examples in many dimensions is singular, and
        its fp16 rounding can make it slightly indefinite, which a small shrinkage would not repair."""
        if shrink not in self._solved:
            if self._eigen is None:
                values, vectors = torch.linalg.eigh(self.covariance)
                self._eigen = values.clamp_min(0), vectors
            values, vectors = self._eigen
            scale = values.mean().clamp_min(1e-12)
            inverse = 1 / ((1 - shrink) * values + shrink * scale)
            weight = vectors @ (inverse[:, None] * (vectors.T @ self.means.T))  # [dim, C] = Sigma^-1 mu
            bias = -0.5 * (self.means * weight.T).sum(1)
            self._solved[shrink] = (weight, bias)
        return self._solved[shrink]

    def logits(self, feats: torch.Tensor, shrink: float) -> torch.Tensor:
        """[n, C] class log-likelihoods up to a per-row constant (equal priors): a softmax gives posteriors."""
        return self.scores(self.transform(feats), shrink)

    def scores(self, x: torch.Tensor, shrink: float) -> torch.Tensor:
        """`logits` of features already in the model's space (`transform`): a caller scoring the same inputs
        under several shrinkages, or again after each task, transforms them once."""
        weight, bias = self._solve(shrink)
        return x @ weight + bias

    def nearest_cosine(self, x: torch.Tensor) -> torch.Tensor:
        """[n] cosine of each feature, in the model's space (`transform`), to the nearest class mean (how far a
        query is from everything known)."""
        return (x @ F.normalize(self.means, dim=-1).T).max(-1).values

    # -- storage: the covariance's upper triangle in fp16 is shared; means and counts belong to their task ------
    def shared_state(self) -> dict[str, torch.Tensor]:
        i, j = torch.triu_indices(self.dim, self.dim)
        return {"shared.covariance": self.covariance[i, j].half(), "shared.dof": torch.tensor([self.dof])}

    def class_state(self, start: int = 0, stop: int | None = None) -> dict[str, torch.Tensor]:
        q, scale = quantize_rows(self.means[start:stop])
        return {"classes.means": q, "classes.scale": scale, "classes.counts": self.counts[start:stop].float()}

    def load_shared(self, tensors: dict[str, torch.Tensor]) -> None:
        i, j = torch.triu_indices(self.dim, self.dim)
        packed = tensors["shared.covariance"]
        if packed.shape != (len(i),):
            raise ValueError(f"covariance has {tuple(packed.shape)} values, expected {len(i)} for width {self.dim}")
        full = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        full[i, j] = packed.double()
        self.covariance = full + full.T - torch.diag(full.diagonal())
        self.dof = float(tensors["shared.dof"][0])
        self._solved.clear()
        self._eigen = None

    def load_classes(self, tensors: dict[str, torch.Tensor]) -> None:
        """Append classes from `class_state` tensors (the covariance is loaded separately)."""
        self.means = torch.cat([self.means, dequantize_rows(tensors["classes.means"], tensors["classes.scale"])])
        self.counts = torch.cat([self.counts, tensors["classes.counts"].double()])
        self._solved.clear()
        self._eigen = None
