"""A global class model from additive statistics: class means and one shared covariance (linear discriminant
analysis) on unit-normalised frozen features, optionally with each class's own top within-class directions beside
the shared covariance, kept without any example.

Why this model: in class-incremental learning each class arrives in exactly one task, so a task contributes its
classes' sums and counts and its own within-class scatter sum (x - mean)(x - mean)^T (from sums of x and of x x^T,
so that shards of a task add up too), and the model after task i is the one fitted jointly on tasks 0..i (up to the
fp16 rounding of the stored covariance). It scores every seen class against every other, so it can tell apart
related classes that arrived in different tasks better than a nearest-prototype router (which ignores how features
vary within classes). Its state is d x d (d <= `max_dim`), where ridge on random features (RanPAC's head) keeps a
2048 x 2048 Gram matrix for about the same accuracy. What `adapters` gives it is every block's pooled output, each
part unit-normalised: when tasks share a domain the lower layers separate related classes the final feature blurs.
The comparisons (final feature alone, two layers, all six, projected or not, other covariance shapes) are in
BENCHMARKS.md, issue 11.

Features wider than `max_dim` are first projected by a fixed seeded Gaussian matrix (regenerated from the seed,
never stored): the shared covariance is the one state that grows with the square of the width, and `max_dim` bounds
it (upper triangle, fp16; fp16 covariance and int8 means change accuracy by no measurable amount: BENCHMARKS.md,
issue 11): 960 wide for `lda`, 768 for `adapters`, whose per-task bytes also pay for each class's mean and
directions at that width. The shrinkage of the covariance towards a scaled identity is chosen by the caller on
held-out data (see `SHRINKAGES`).

Why a class's own directions (`rank` > 0): one covariance for every class is LDA's assumption, and it is what
separates LDA from a discriminative probe on the same features (classes of related intents differ in how they vary,
not only in where their mean is). Each class then keeps the top `rank` eigenvectors of its own scatter (4-bit) and
their variances, and scores under Sigma_c = (1 - alpha) Sigma + alpha U_c U_c^T (regularised discriminant analysis,
Friedman 1989, with the class's part cut to its top directions), by the Woodbury identity at the cost of `rank`
extra columns per class. The scatter of a class is a sum over its examples, so shards add up as before; alpha = 0 is
LDA. Which alpha and shrinkage is for the caller to choose on held-out data; `log_density` gives the held-out
likelihood, a density criterion that does not saturate when few classes compete.
"""

from __future__ import annotations

import scipy.linalg
import torch
import torch.nn.functional as F

from .sums import class_sums, means_of

# candidates for the covariance shrinkage, chosen on held-out data; the most regularised first, so that with no
# held-out evidence (a tie) the choice is the safe one
SHRINKAGES = (0.3, 1e-1, 1e-2, 1e-3)
# candidates for the weight of each class's own directions (0: LDA, the first, for the same reason)
ALPHAS = (0.0, 0.1, 0.3, 0.5)
# step of the 4-bit uniform quantiser of a class's directions, in standard deviations of the vector's entries: the
# mean-square-optimal step for Gaussian values at 16 levels (Max 1960)
NIBBLE_STEP = 0.3352


def eigh(matrix: torch.Tensor, top: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues ascending, eigenvectors as columns) of a symmetric float64 matrix; with `top`, only the `top`
    largest. Through SciPy's LAPACK (`syevr`), which computes just the pairs asked for: a class's top directions at
    768 wide took 0.13 s each with `torch.linalg.eigh` on 2 cores, and eigendecompositions were 9% of a CLINC150
    run (BENCHMARKS.md, issue 12); the same pairs to rounding, about 8 times faster."""
    n = matrix.shape[0]
    values, vectors = scipy.linalg.eigh(matrix.detach().double().cpu().numpy(), driver="evr", check_finite=False,
                                        subset_by_index=None if top is None else [n - top, n - 1])
    return torch.from_numpy(values), torch.from_numpy(vectors)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 rows with one fp32 scale each: class means cost a byte per value (no accuracy change measured)."""
    scale = (x.abs().amax(1) / 127).clamp_min(1e-12).float()
    return (x / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.double() * scale.double()[:, None]


def quantize_nibbles(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """4-bit vectors along the last axis, two values per byte, with one fp32 step each: levels (k + 1/2) step for
    k in -8..7. Stored and kept in this form (re-quantising a dequantised vector would pick another step)."""
    step = (NIBBLE_STEP * x.std(-1, unbiased=False)).clamp_min(1e-12).float()
    k = ((x / step[..., None].double() - 0.5).round().clamp(-8, 7) + 8).to(torch.uint8)  # 0..15
    k = F.pad(k, (0, k.shape[-1] % 2))
    return k[..., 0::2] | (k[..., 1::2] << 4), step


def dequantize_nibbles(packed: torch.Tensor, step: torch.Tensor, dim: int) -> torch.Tensor:
    k = torch.stack([packed & 15, packed >> 4], -1).flatten(-2)[..., :dim].double() - 8
    return (k + 0.5) * step.double()[..., None]


class GaussianClassModel:
    """In memory, the state is held as stored (means int8 per row, the covariance fp16, a class's directions 4-bit),
    so a saved model predicts exactly what the trained one did; the additive update runs in float64 on those
    values."""

    def __init__(self, in_dim: int, max_dim: int = 960, seed: int = 0, rank: int = 0):
        self.dim = min(in_dim, max_dim) if max_dim else in_dim
        self.rank = min(rank, self.dim)
        self.projection = None
        if self.dim < in_dim:
            g = torch.Generator().manual_seed(seed)
            self.projection = torch.randn(in_dim, self.dim, generator=g) / self.dim ** 0.5  # fp32: wide inputs
        self.means = torch.zeros(0, self.dim, dtype=torch.float64)
        self.counts = torch.zeros(0, dtype=torch.float64)
        self.covariance = torch.zeros(self.dim, self.dim, dtype=torch.float64)  # within-class, pooled
        self.dof = 0.0  # examples minus classes: the covariance's denominator
        # each class's top `rank` within-class directions, as stored (4-bit, `quantize_nibbles`), and the variance
        # of its examples along each
        self.packed = torch.zeros(0, rank, (self.dim + 1) // 2, dtype=torch.uint8)
        self.steps = torch.zeros(0, rank)
        self.variances = torch.zeros(0, rank)
        self._solved: dict[tuple[float, float], tuple] = {}
        self._eigen: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.means)

    def transform(self, feats: torch.Tensor) -> torch.Tensor:
        """The model's feature: projected (if wider than max_dim), then unit-normalised."""
        x = feats.float() @ self.projection if self.projection is not None else feats
        return F.normalize(x.double(), dim=-1)

    def task_statistics(self, feats: torch.Tensor, labels: torch.Tensor, classes: list[int]):
        """(sums [k, dim], counts [k], second moment sum x x^T) of one task's new classes, in the model's feature:
        [dim, dim] over the task, or [k, dim, dim] per class when the model keeps each class's own directions (in
        fp32, which halves a task's largest transient, and is far finer than the fp16 the covariance is stored in).
        Sums over examples, so the statistics of a task's shards add up (several processes each summing their own
        share: `distributed.all_sum`) to those of the whole task."""
        x = self.transform(feats)
        sums, counts = class_sums(x, labels, classes)
        if not self.rank:
            return sums, counts, x.T @ x
        second = torch.zeros(len(classes), self.dim, self.dim)
        for i, c in enumerate(classes):
            xc = x[labels == c]
            second[i] = xc.T @ xc
        return sums, counts, second

    def add(self, sums: torch.Tensor, counts: torch.Tensor, second: torch.Tensor) -> None:
        """Append a task's classes (columns after the seen ones) and pool its within-class scatter
        (sum x x^T - sum_c n_c mu_c mu_c^T, in float64 on unit vectors) into the covariance."""
        counts, sums = counts.double(), sums.double()
        means = means_of(sums, counts)
        if second.ndim == 3:  # per class: keep each class's own top directions, pool the rest
            scatter = torch.zeros(self.dim, self.dim, dtype=torch.float64)
            for i in range(len(counts)):  # one class at a time: a task's [k, dim, dim] is held once, not thrice
                own = second[i].double() - torch.outer(sums[i], means[i])
                values, vectors = eigh(own, self.rank)
                top = vectors.flip(-1).T  # [rank, dim], largest first
                packed, steps = quantize_nibbles(top)
                self.packed = torch.cat([self.packed, packed[None]])
                self.steps = torch.cat([self.steps, steps[None]])
                variance = values.flip(-1).clamp_min(0) / max(float(counts[i]) - 1, 1)
                self.variances = torch.cat([self.variances, variance[None].float()])
                scatter += own
        else:
            scatter = second.double() - sums.T @ means
        q, scale = quantize_rows(means)
        self.means = torch.cat([self.means, dequantize_rows(q, scale)])
        self.counts = torch.cat([self.counts, counts])
        dof = self.dof + float(counts.sum()) - len(counts)
        if dof > 0:
            pooled = (self.covariance * self.dof + scatter) / dof
            self.covariance = pooled.half().double()  # as stored
        self.dof = dof
        self._changed(eigen=True)

    def _changed(self, eigen: bool) -> None:
        self._solved.clear()
        if eigen:
            self._eigen = None

    def _inverse(self, shrink: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(eigenvectors, inverse eigenvalues) of (1 - alpha) Sigma, Sigma shrunk towards its mean variance. From
        one eigendecomposition whose eigenvalues are clipped at zero: the covariance of few examples in many
        dimensions is singular, and its fp16 rounding can make it slightly indefinite, which a small shrinkage
        would not repair."""
        if self._eigen is None:
            values, vectors = eigh(self.covariance)
            self._eigen = values.clamp_min(0), vectors
        values, vectors = self._eigen
        scale = values.mean().clamp_min(1e-12)
        return vectors, 1 / ((1 - alpha) * ((1 - shrink) * values + shrink * scale))

    def _solve(self, shrink: float, alpha: float):
        """Sigma^-1 mu and the bias; with a class's own directions U_c (scaled by sqrt(alpha variance)), also the
        Woodbury terms: Sigma_c^-1 = P^-1 - P^-1 U_c K_c^-1 U_c^T P^-1 with P = (1 - alpha) Sigma and
        K_c = I + U_c^T P^-1 U_c, kept as B_c = P^-1 U_c chol(K_c^-1), so that a class scores
        x^T W_c + b_c + |x^T B_c + d_c|^2 / 2 - log det K_c / 2 (the same for every class dropped)."""
        key = (shrink, alpha)
        if key not in self._solved:
            vectors, inverse = self._inverse(shrink, alpha)

            def apply(m):  # P^-1 m, m [dim, n]
                return vectors @ (inverse[:, None] * (vectors.T @ m))

            weight = apply(self.means.T)  # [dim, C]
            bias = -0.5 * (self.means * weight.T).sum(1)
            extra = None
            if alpha and self.rank and self.num_classes:
                u = self.directions() * (alpha * self.variances.double()).sqrt()[..., None]  # [C, r, dim]
                a = apply(u.reshape(-1, self.dim).T).T.reshape(u.shape)  # P^-1 U_c
                k = torch.eye(self.rank, dtype=u.dtype) + u @ a.transpose(1, 2)  # [C, r, r]
                b = a.transpose(1, 2) @ torch.linalg.cholesky(torch.linalg.inv(k))  # [C, dim, r]
                offset = -(self.means[:, None, :] @ b).squeeze(1)  # [C, r]
                extra = (b.permute(1, 0, 2).reshape(self.dim, -1), offset, torch.logdet(k))
            self._solved[key] = (weight, bias, extra)
        return self._solved[key]

    def directions(self) -> torch.Tensor:
        """[C, rank, dim] each class's top within-class directions, as stored."""
        return dequantize_nibbles(self.packed, self.steps, self.dim)

    def logits(self, feats: torch.Tensor, shrink: float, alpha: float = 0.0) -> torch.Tensor:
        """[n, C] class log-likelihoods up to a per-row constant (equal priors): a softmax gives posteriors."""
        return self.scores(self.transform(feats), shrink, alpha)

    def scores(self, x: torch.Tensor, shrink: float, alpha: float = 0.0) -> torch.Tensor:
        """`logits` of features already in the model's space (`transform`): a caller scoring the same inputs
        under several settings, or again after each task, transforms them once."""
        weight, bias, extra = self._solve(shrink, alpha)
        out = x @ weight + bias
        if extra is not None:
            b, offset, logdet = extra
            w = (x @ b).reshape(len(x), self.num_classes, self.rank).add_(offset).square_()
            out += 0.5 * w.sum(-1) - 0.5 * logdet
        return out

    def log_density(self, x: torch.Tensor, labels: torch.Tensor, shrink: float, alpha: float = 0.0,
                    scores: torch.Tensor | None = None) -> float:
        """Summed log density of features (`transform`ed) under their own classes' Gaussians, up to a constant
        that depends on nothing chosen: how well a setting models held-out data, whatever the number of classes.
        `scores`: this setting's `scores` of x, where the caller has them already."""
        vectors, inverse = self._inverse(shrink, alpha)
        scores = self.scores(x, shrink, alpha) if scores is None else scores
        own = scores.gather(1, labels[:, None]).squeeze(1)
        quadratic = ((x @ vectors) ** 2 * inverse).sum(1)
        return float((own - 0.5 * quadratic).sum() + 0.5 * len(x) * inverse.log().sum())

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
        out = {"classes.means": q, "classes.scale": scale, "classes.counts": self.counts[start:stop].float()}
        if self.rank:
            out.update({"classes.directions": self.packed[start:stop], "classes.direction_steps":
                        self.steps[start:stop], "classes.variances": self.variances[start:stop]})
        return out

    def load_shared(self, tensors: dict[str, torch.Tensor]) -> None:
        i, j = torch.triu_indices(self.dim, self.dim)
        packed = tensors["shared.covariance"]
        if packed.shape != (len(i),):
            raise ValueError(f"covariance has {tuple(packed.shape)} values, expected {len(i)} for width {self.dim}")
        full = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        full[i, j] = packed.double()
        self.covariance = full + full.T - torch.diag(full.diagonal())
        self.dof = float(tensors["shared.dof"][0])
        self._changed(eigen=True)

    def class_shapes(self, k: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """The shape and dtype of each `class_state` tensor for k classes (what a loader checks a file against)."""
        out = {"classes.means": ((k, self.dim), torch.int8), "classes.scale": ((k,), torch.float32),
               "classes.counts": ((k,), torch.float32)}
        if self.rank:
            out.update({"classes.directions": ((k, self.rank, (self.dim + 1) // 2), torch.uint8),
                        "classes.direction_steps": ((k, self.rank), torch.float32),
                        "classes.variances": ((k, self.rank), torch.float32)})
        return out

    def load_classes(self, tensors: dict[str, torch.Tensor]) -> None:
        """Append classes from `class_state` tensors (the covariance is loaded separately)."""
        self.means = torch.cat([self.means, dequantize_rows(tensors["classes.means"], tensors["classes.scale"])])
        self.counts = torch.cat([self.counts, tensors["classes.counts"].double()])
        if self.rank:
            self.packed = torch.cat([self.packed, tensors["classes.directions"]])
            self.steps = torch.cat([self.steps, tensors["classes.direction_steps"].float()])
            self.variances = torch.cat([self.variances, tensors["classes.variances"].float()])
        self._changed(eigen=False)
