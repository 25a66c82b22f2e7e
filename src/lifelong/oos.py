"""Out-of-scope rejection: a query whose best score falls below a calibrated threshold gets `out_of_scope`.

The score is the learner's `confidence`: its highest class score by default (a cosine for `ncm`); for `adapters`
the best mixture probability times the cosine to the nearest known class prototype. The threshold is chosen on held-out data the learner never trained on:
- with out-of-scope examples, the one that maximises in-scope accuracy (a rejection counts as wrong) plus
  out-of-scope recall, the two numbers CLINC150's paper reports (Larson et al., 2019);
- with in-scope data only, the score that keeps a fraction `keep` of the in-scope queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

OUT_OF_SCOPE = "out_of_scope"


def calibrate(in_scores: torch.Tensor, in_correct: torch.Tensor, oos_scores: torch.Tensor | None = None,
              keep: float = 0.95) -> float:
    """The rejection threshold for these held-out scores (reject when score < threshold)."""
    in_scores = in_scores.double()
    if oos_scores is None or len(oos_scores) == 0:
        if len(in_scores) == 0:
            return float("-inf")
        return float(torch.quantile(in_scores, 1.0 - keep, interpolation="lower"))
    oos_scores = oos_scores.double()
    candidates = torch.cat([in_scores, oos_scores, in_scores.new_tensor([float("-inf")])]).unique()
    # accepted[i, c]: in-scope query i kept at candidate c; vectorised over all candidates at once
    kept = in_scores[:, None] >= candidates[None, :]
    in_acc = (kept & in_correct.bool()[:, None]).double().mean(0) if len(in_scores) else 0.0
    oos_recall = (oos_scores[:, None] < candidates[None, :]).double().mean(0)
    best = int(torch.argmax(in_acc + oos_recall))  # first maximum: the lowest threshold among ties
    return float(candidates[best])


@dataclass
class Rejection:
    """In-scope accuracy with rejection and out-of-scope recall at one threshold."""

    threshold: float | None  # None: nothing is rejected
    in_scope_accuracy: float  # correct and accepted, over all in-scope queries
    in_scope_accuracy_no_rejection: float
    in_scope_rejected: float
    oos_recall: float | None

    @classmethod
    def measure(cls, threshold: float, in_scores, in_correct, oos_scores=None) -> Rejection:
        kept = in_scores >= threshold
        return cls(
            threshold=float(threshold) if math.isfinite(threshold) else None,
            in_scope_accuracy=float((kept & in_correct.bool()).double().mean()) if len(in_scores) else 0.0,
            in_scope_accuracy_no_rejection=float(in_correct.double().mean()) if len(in_scores) else 0.0,
            in_scope_rejected=float((~kept).double().mean()) if len(in_scores) else 0.0,
            oos_recall=float((oos_scores < threshold).double().mean()) if oos_scores is not None and len(oos_scores) else None,
        )

