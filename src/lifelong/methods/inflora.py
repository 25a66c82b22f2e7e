"""InfLoRA, interference-free low-rank adaptation (Liang & Li, CVPR 2024).

Each task adds a LoRA branch W += s B A to the query and value layers of the top blocks, but A (the
down-projection) is not trained: it is designed before the task as the top principal directions of the new task's
inputs to that layer *after removing the subspace spanned by old tasks' inputs*, and only B trains. The update
B A then maps every input in the old tasks' subspace to zero, so learning the new task does not change the layer's
output on what old tasks fed it (up to the energy the subspace leaves out), while still adapting in the directions
the new task uses. After the task its branch is merged into the weights and the protected subspace grows, per
layer, by the fewest principal directions of the task's inputs that bring the captured input energy to
`threshold` (the GPM/DualGPM rule; the basis itself is kept, not its complement). Layers under one parent module
(query and value of one attention block) read the same input and share one basis.

Classification uses one head over all classes: each task trains its own rows only (cross-entropy over its classes,
as in the paper), earlier rows stay as they were. Stored: every task's A and B (fp32, merged in order on load),
the bases, and the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..adapters import AdaptedTop
from . import register
from .topblock import AdapterSettings, SplitCache, fit_top, top_features
from .base import Learner, saved_head
from .settings import Fraction, Positive, PositiveFloat


@dataclass
class InfLoRAConfig(AdapterSettings):
    adapter: ClassVar[str] = "lora"  # fixed: InfLoRA designs a LoRA's down-projection
    precision: ClassVar[str] = "fp32"  # fixed: each branch is merged into the weights
    threshold: Fraction = 0.95  # fraction of each task's input energy whose subspace is protected from later tasks
    epochs: Positive = 5
    lr: PositiveFloat = 3e-3
    batch_size: Positive = 32
    seed: int = 0


def complement(basis: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis [d, d - k] of the orthogonal complement of the orthonormal columns of `basis` [d, k]."""
    d = basis.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    if basis.shape[1] == 0:
        return eye
    b = basis.double()
    evals, evecs = torch.linalg.eigh(eye - b @ b.T)  # a projection: eigenvalues 0 (span of basis) or 1
    return evecs[:, evals > 0.5]


def design_down(gram: torch.Tensor, basis: torch.Tensor, rank: int) -> torch.Tensor:
    """A [rank, d]: the top principal directions of the inputs (gram = sum x x^T) inside the complement of
    `basis`; rows past the complement's dimension are zero."""
    comp = complement(basis)
    _, evecs = torch.linalg.eigh(comp.T @ gram @ comp)
    k = min(rank, comp.shape[1])
    down = torch.zeros(rank, gram.shape[0], dtype=torch.float64)
    if k:
        down[:k] = (comp @ evecs[:, -k:].flip(-1)).T
    return down.float()


def extend_basis(basis: torch.Tensor, gram: torch.Tensor, threshold: float) -> torch.Tensor:
    """Add the fewest principal directions of the inputs outside `basis` that make the basis capture `threshold`
    of their energy (trace of gram); returns the basis with the new orthonormal columns appended."""
    comp = complement(basis)
    evals, evecs = torch.linalg.eigh(comp.T @ gram @ comp)
    evals, evecs = evals.flip(0).clamp(min=0), evecs.flip(-1)
    total = torch.trace(gram).clamp(min=1e-30)
    captured = total - evals.sum()
    if captured >= threshold * total:
        return basis
    n = int(((captured + evals.cumsum(0)) < threshold * total).sum()) + 1
    return torch.cat([basis, (comp @ evecs[:, :n]).float()], 1)


@register
class InfLoRA(Learner):
    name = "inflora"
    shares_processes = True  # SplitCache shares the frozen pass; fit shares the training
    description = "InfLoRA: per-task LoRA whose down-projection avoids old tasks' input subspace, merged after"
    Config = InfLoRAConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.top = AdaptedTop(backbone.model, self.config.adapter_config())
        self.cache = SplitCache(backbone, self.top.split)
        # site -> the input it reads: a block's linear projections read one hidden state (its query and value
        # share a basis); a convolution reads its own (EfficientNet's expand and project convolutions differ)
        self.group = {n: n.rsplit(".", 1)[0] if isinstance(s.base, torch.nn.Linear) else n
                      for n, s in self.top.sites.items()}
        first = {g: n for n, g in reversed(self.group.items())}
        self.readers = {g: self.top.sites[n] for g, n in first.items()}  # one site per group records the input
        self.basis = {g: torch.zeros(s.shapes()["A"][1], 0) for g, s in self.readers.items()}
        self.branches: list[dict[str, torch.Tensor]] = []  # per task: site.A, site.B
        self.head = None

    @torch.no_grad()
    def input_grams(self, texts) -> dict[str, torch.Tensor]:
        """sum x x^T (float64) over every real token's input to each group of adapted layers."""
        grams: dict[str, torch.Tensor] = {}
        mask = {}

        def recorder(group):
            def hook(module, args):
                x = args[0]  # [n, tokens, d] (padded: keep real tokens), or [n, C, H, W] for a 1x1 convolution
                x = x.movedim(1, -1).flatten(0, 2) if x.dim() == 4 else x[mask["real"]]
                x = (x.cpu() if x.device.type == "mps" else x).double()  # MPS has no float64
                grams[group] = grams.get(group, 0) + x.T @ x
            return hook

        def forward(h, m):
            mask["real"] = m.bool()
            return self.top(h, m)

        hooks = [site.register_forward_pre_hook(recorder(g)) for g, site in self.readers.items()]
        try:
            hidden, _ = self.cache(list(texts))
            top_features(forward, hidden, workers=1)  # the hooks add into one sum
        finally:
            for h in hooks:
                h.remove()
        return {g: v.cpu() for g, v in grams.items()}  # summed where the top blocks run; bases live on the CPU

    def merge(self, branch: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, site in self.top.sites.items():
                w = site.base.weight  # on the backbone's device; branches are kept (and loaded) on the CPU
                w += (site.scaling * branch[f"{n}.B"].to(w.device) @ branch[f"{n}.A"].to(w.device)).view_as(w)
        self.branches.append(branch)

    def _learn(self, task) -> None:
        c = self.config
        self.head = self.grow_head(self.head, self.backbone.dim)
        grams = self.input_grams(task.train.inputs)
        self.top.new_task()
        for n, site in self.top.sites.items():
            site.fix("A", design_down(grams[self.group[n]], self.basis[self.group[n]], c.rank))
        self.top.set_active("train")
        up = [site.trainable()["B"] for site in self.top.sites.values()]
        groups = [{"params": up, "lr": c.lr}, {"params": self.head.parameters(), "lr": c.lr}]
        fit_top(self.top, self.cache, self.head, task, groups, c, f"inflora task {task.index}")
        branch = {f"{n}.{k}": s.trainable()[k].detach().cpu().clone() for n, s in self.top.sites.items()
                  for k in ("A", "B")}
        self.top.set_active(None)
        for site in self.top.sites.values():
            site.discard()
        self.merge(branch)
        grams = self.input_grams(task.train.inputs)  # what the task feeds the layers now: protect it
        self.basis = {g: extend_basis(b, grams[g], c.threshold) for g, b in self.basis.items()}

    @torch.no_grad()
    def predict(self, inputs) -> torch.Tensor:
        hidden, _ = self.cache(list(inputs))
        return self.head(top_features(self.top, hidden))

    def state(self):
        out = {f"adapter.t{t:03d}.{k}": v for t, b in enumerate(self.branches) for k, v in b.items()}
        out.update({f"subspace.{g}": b for g, b in self.basis.items()})
        out.update({"head.weight": self.head.weight.detach(), "head.bias": self.head.bias.detach()})
        return out

    def load_state(self, tensors):
        tasks = sorted({k.split(".")[1] for k in tensors if k.startswith("adapter.")})
        for t in tasks:
            prefix = f"adapter.{t}."
            self.merge({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        self.basis = {g: tensors[f"subspace.{g}"] for g in self.basis}
        self.head = saved_head(tensors)
