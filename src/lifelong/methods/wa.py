"""Weight aligning (Zhao et al., CVPR 2020): after each task, rescale the new classes' head weights so their mean
norm matches the old classes', correcting the bias of a head trained mostly on new data."""

from __future__ import annotations

import torch

from . import register
from .finetune import Finetune


def align(weight: torch.Tensor, n_old: int) -> float:
    """Scale rows n_old: in place to the old rows' mean norm; returns the factor (1.0 with no old classes)."""
    if n_old == 0 or n_old == len(weight):
        return 1.0
    norms = weight.norm(dim=1)
    gamma = (norms[:n_old].mean() / norms[n_old:].mean()).item()
    weight[n_old:] *= gamma
    return gamma


@register
class WA(Finetune):
    name = "wa"
    description = "Weight aligning: fine-tuning, then new-class head norms matched to old ones"

    def end_task(self, task) -> None:
        with torch.no_grad():
            self.gamma = align(self.head.weight, self.num_classes - len(task.classes))
