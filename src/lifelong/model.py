"""A trained learner with its class names and out-of-scope threshold: what `lifelong.load` returns, what the
store loads per version, and what the server answers with.

The `Learner` protocol speaks in score matrices over global class ids; this face speaks in labels, so a user never
maps column ids by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from . import oos
from .errors import LifelongError


class Model:
    """`predict(inputs)` -> labels, `scores(inputs)` -> [n, classes] tensor, `classes_`, `save(dir)`.

    Inputs are texts (a list of str) or images (a tensor [n, 3, H, W], a list of image tensors); a single str or
    image tensor [3, H, W] is one input and gets one answer back. Below `threshold`, a prediction is
    `out_of_scope`.
    """

    def __init__(self, learner, classes: Sequence[str], threshold: float | None = None, version: int | None = None,
                 source: str | None = None):
        self.learner, self.classes, self.threshold, self.version = learner, list(classes), threshold, version
        self.source = source
        learner.class_names = self.classes

    @property
    def classes_(self) -> list[str]:
        """Class names; column j of `scores` is class `classes_[j]`."""
        return self.classes

    def __repr__(self) -> str:
        where = f", version={self.version}" if self.version is not None else ""
        return (f"Model(method={self.learner.name!r}, backbone={self.learner.backbone.name!r}, "
                f"classes={len(self.classes)}, threshold={self.threshold}{where})")

    def _batch(self, inputs) -> tuple[Sequence, bool]:
        """(a batch, whether the caller gave one input)."""
        if not self.classes:
            raise LifelongError("the model has learned no classes yet; run `lifelong learn` first")
        if isinstance(inputs, str):
            return [inputs], True
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 3:
            return inputs[None], True
        if isinstance(inputs, bytes):
            raise TypeError("inputs are texts (str) or images (tensors), not bytes; decode them first")
        return (inputs if isinstance(inputs, torch.Tensor) else list(inputs)), False

    def scores(self, inputs) -> torch.Tensor:
        """The method's class scores [n, len(classes_)] (one row for a single input); the argmax is the class
        predicted before out-of-scope rejection. What a score means is the method's own (for `adapters`, mixed
        class probabilities); `predict_top` gives the confidence the threshold is compared with."""
        batch, _ = self._batch(inputs)
        with torch.no_grad():
            out = self.learner.predict(batch)
        self.learner.clear_cache()  # a long-lived model sees endless new inputs: keep no per-input state
        return out

    def predict(self, inputs) -> list[str] | str:
        """A label per input (`out_of_scope` where the confidence is below the threshold); a str for one input."""
        batch, single = self._batch(inputs)
        labels = [p["label"] for p in self.predict_top(batch)]
        return labels[0] if single else labels

    def predict_top(self, inputs, top_k: int = 1) -> list[dict]:
        """Per input: `label` (after rejection), `score` (the confidence the out-of-scope threshold is compared
        with: the method's own measure of being in scope, not necessarily the top class's score), and `top`, the
        `top_k` classes with their class scores."""
        batch, _ = self._batch(inputs)
        with torch.no_grad():
            scores = self.learner.predict(batch)
            confidence = self.learner.confidence(batch, scores).tolist()
        self.learner.clear_cache()
        k = max(1, min(top_k, len(self.classes)))
        values, index = scores.topk(k, dim=-1)
        out = []
        for c, v, i in zip(confidence, values.tolist(), index.tolist()):
            rejected = self.threshold is not None and c < self.threshold
            out.append({
                "label": oos.OUT_OF_SCOPE if rejected else self.classes[i[0]],
                "score": round(c, 6),
                "top": [{"label": self.classes[c], "score": round(s, 6)} for s, c in zip(v, i)],
            })
        return out

    def save(self, path: str | Path) -> Path:
        """The learner's files (safetensors + JSON) with the class names and threshold; `lifelong.load` reads
        them back."""
        self.learner.class_names = self.classes
        return self.learner.save(path, {"threshold": self.threshold,
                                        "max_length": getattr(self.learner.backbone, "max_length", None)})
