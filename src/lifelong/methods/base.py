"""The one protocol every method follows, in the spirit of scikit-learn's fit/predict.

A method sees tasks one at a time through `learn(task)` and never sees a test split; `predict(inputs)` returns
scores over all classes seen so far (column = global class id). `state()` names every tensor the method must keep,
which gives both the byte count reported per task and the safetensors save format.

The class bookkeeping is the base class's, as in LAMDA-PILOT's BaseLearner: `learn` checks that the task brings the
next global class ids, counts them in `num_classes`, then calls the method's own `_learn`; a head over all classes
grows with `grow_head`. So no method can count classes its own way, and a stream out of order is refused by all.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import distributed
from ..data.task import Examples, Task
from ..errors import LifelongError
from ..io import atomic_dir
from .settings import config_from_dict


@dataclasses.dataclass
class NoConfig:
    pass


class Learner(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    keeps_examples: ClassVar[bool] = False
    Config: ClassVar[type] = NoConfig
    shared_kinds: ClassVar[tuple[str, ...]] = ("shared",)  # state kept once, not per task (reported apart)
    frozen_features: ClassVar[bool] = False  # reads inputs only through `self.features` (so several processes
    # share its frozen pass: distributed.py)
    shares_processes: ClassVar[bool] = False  # several processes share its run (frozen pass, training,
    # evaluation) and hold the same weights: true of every `frozen_features` method, and of a method that reads its
    # frozen pass through a sharing cache (SplitCache), trains through `fit` and chooses nothing rank by rank

    def __init__(self, backbone, config=None, features=None):
        from ..backbones import FeatureCache

        self.backbone = backbone
        self.config = config if config is not None else self.Config()
        self.features = features if features is not None else FeatureCache(backbone, progress=False)
        self.num_classes = 0
        self.class_names: list[str] = []  # global id -> name, set by whoever names the classes (the protocol
        # loop, the store); saved in learner.json so a loaded learner answers with names

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "learn" in cls.__dict__:
            raise TypeError(f"{cls.__name__} defines learn(): a method defines _learn(task), which Learner.learn "
                            "calls once it has checked and counted the task's classes")
        for name in ("predict", "predict_routed", "predict_in_task"):
            if name in cls.__dict__:
                setattr(cls, name, _inputs_checked(cls.__dict__[name]))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.name!r}, backbone={getattr(self.backbone, 'name', None)!r}, "
                f"classes={self.num_classes})")

    # -- the protocol -------------------------------------------------------------------------------------
    def learn(self, task: Task) -> None:
        """Learn one task. Its classes must be the next global ids (none, for a domain-incremental task that only
        brings new inputs of known classes); `_learn` runs with `num_classes` already counting them."""
        expected = list(range(self.num_classes, self.num_classes + len(task.classes)))
        if list(task.classes) != expected:
            raise LifelongError(f"{self.name}: task {task.index} brings class ids {list(task.classes)}, expected the "
                                f"next ones {expected} (ids are global, numbered in order of first appearance)")
        before = self.num_classes
        self.num_classes += len(task.classes)
        try:
            self._learn(task)
        except BaseException:
            self.num_classes = before  # a refused or interrupted task leaves the count as it was
            raise

    @abstractmethod
    def _learn(self, task: Task) -> None:
        """The method's own learning of one task (its classes end at `num_classes`)."""

    def grow_head(self, head: nn.Linear | None, dim: int) -> nn.Linear:
        """A linear head over every class counted so far, keeping the rows `head` already had."""
        new = nn.Linear(dim, self.num_classes)
        if head is not None:
            with torch.no_grad():
                new.weight[: head.out_features] = head.weight
                new.bias[: head.out_features] = head.bias
        return new

    def shard(self, examples: Examples) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's share of `examples`: (frozen features, labels). A method whose state is a sum over
        examples (class sums, Gram matrices, hit counts) computes it on its share and adds the shares up with
        `distributed.all_sum`, so with N processes each embeds 1/N of the data and none holds every feature. With
        one process the share is everything."""
        start, stop = distributed.share(len(examples))
        with distributed.alone():  # this rank's rows only: no gather
            feats = self.features(examples.inputs[start:stop])
        return feats, examples.labels[start:stop]

    @abstractmethod
    def predict(self, inputs: Sequence) -> torch.Tensor:
        """Scores [n, num_classes] over the classes seen so far; argmax is the predicted global class id."""

    def score_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Scores [n, num_classes] from frozen features [n, dim], for a method with `frozen_features` (its
        `predict` is this of `self.features(inputs)`). Differentiable in the features: test-time adaptation (tta/)
        adapts the backbone under this fixed head."""
        raise NotImplementedError(f"{self.name} does not score frozen features alone")

    def predict_routed(self, inputs: Sequence) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores, and for methods that route among per-task modules a score per task [n, T] (higher: more
        likely the query's task; routing accuracy ranks them)."""
        return self.predict(inputs), None

    def predict_in_task(self, inputs: Sequence, task: int, classes: list[int]) -> torch.Tensor:
        """Scores [n, len(classes)] over one task's classes, the task given (task-incremental accuracy)."""
        return self.predict(inputs)[:, classes]

    def chosen(self) -> dict:
        """Settings the method chose inside `learn` on held-out data (recorded in results.json)."""
        return {}

    def confidence(self, inputs: Sequence, scores: torch.Tensor) -> torch.Tensor:
        """How sure the learner is that each input belongs to a class it knows [n]; out-of-scope rejection
        thresholds it. By default the highest class score."""
        return scores.max(-1).values

    def clear_cache(self) -> None:
        """Forget per-input cached features (kept during a run so each input is embedded once); a server calls
        this after each request so memory does not grow with every text it has seen."""
        for cache in (self.features, getattr(self, "cache", None)):
            if hasattr(cache, "clear"):
                cache.clear()

    def memo_state(self, inputs) -> dict[str, tuple[list[str], torch.Tensor]]:
        """What this learner computed per input and would compute the same again, by tag: (input keys, rows). A
        model store keeps it for the held-out rows it scores after every learn (store/memo.py), so the next
        version computes only what its new task changes. Here: the frozen features of those inputs."""
        if not hasattr(self.features, "export"):  # a FeatureCache
            return {}
        keys, feats = self.features.export(list(inputs))
        return {"features": (keys, feats)} if keys else {}

    def load_memo(self, memo: dict[str, tuple[list[str], torch.Tensor]]) -> None:
        """Rows of `memo_state` saved by this learner's version (a method ignores tags and shapes it does not
        know: it is a cache, and a miss costs only time)."""
        if "features" in memo and hasattr(self.features, "add"):
            self.features.add(*memo["features"])

    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """Every tensor the method must keep to predict, named `kind.name` (kind groups the byte report)."""

    @abstractmethod
    def load_state(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def stored_bytes(self) -> dict[str, int]:
        """Bytes the method keeps, by kind (the part of each tensor name before the first dot)."""
        out: dict[str, int] = {}
        for k, v in self.state().items():
            kind = k.split(".", 1)[0]
            out[kind] = out.get(kind, 0) + v.numel() * v.element_size()
        return out

    # -- persistence: safetensors + JSON, never pickle -----------------------------------------------------
    def meta(self, extra: dict | None = None) -> dict:
        """The fields of learner.json every method writes (a method with its own file layout adds to them)."""
        return {
            "method": self.name,
            "config": dataclasses.asdict(self.config),
            "backbone": self.backbone.name,
            "num_classes": self.num_classes,
            "classes": list(self.class_names),
            **(extra or {}),
        }

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """learner.json (method, settings, backbone, class names, and `extra` fields) and weights.safetensors,
        written into a temporary directory and renamed into place."""
        meta = self.meta(extra)

        def write(tmp: Path) -> None:
            tensors = {k: v.detach().contiguous().cpu() for k, v in self.state().items()}
            save_file(tensors, str(tmp / "weights.safetensors"))
            (tmp / "learner.json").write_text(json.dumps(meta, indent=2))

        return atomic_dir(path, write)

    @classmethod
    def load(cls, path: str | Path, backbone, features=None) -> Learner:
        """A saved learner. On `Learner` itself, the method is the one the file names; on a method's class, a
        file of another method is refused."""
        path = Path(path)
        if cls is Learner:
            from . import get

            try:
                method = json.loads((path / "learner.json").read_text()).get("method")
            except (OSError, ValueError, AttributeError) as e:
                raise LifelongError(f"{path / 'learner.json'}: cannot read ({e})") from None
            return get(str(method)).load(path, backbone, features)
        try:
            meta = json.loads((path / "learner.json").read_text())
            tensors = load_file(str(path / "weights.safetensors"))
        except (OSError, ValueError, SafetensorError) as e:
            raise LifelongError(f"{path}: cannot load learner ({e})") from None
        if meta.get("method") != cls.name:
            raise LifelongError(f"{path}: holds method {meta.get('method')!r}, not {cls.name!r}")
        if meta.get("backbone") != backbone.name:
            raise LifelongError(f"{path}: trained on backbone {meta.get('backbone')!r}, not {backbone.name!r}")
        learner = cls(backbone, config_from_dict(cls.Config, meta.get("config", {})), features)
        learner.num_classes = int(meta["num_classes"])
        learner.class_names = [str(c) for c in meta.get("classes") or []]
        learner.load_state(tensors)
        return learner


def saved_head(tensors: dict[str, torch.Tensor], prefix: str = "head") -> nn.Linear:
    """The linear head saved as `prefix.weight` and `prefix.bias`."""
    w = tensors[f"{prefix}.weight"]
    head = nn.Linear(w.shape[1], w.shape[0])
    head.load_state_dict({"weight": w, "bias": tensors[f"{prefix}.bias"]})
    return head


def _inputs_checked(method):
    """A bare string is a sequence of characters: predicting on it would silently score each character."""

    @functools.wraps(method)
    def checked(self, inputs, *args, **kwargs):
        if isinstance(inputs, (str, bytes)):
            raise TypeError(f"{type(self).__name__}.{method.__name__} takes a sequence of inputs, not one "
                            f"{type(inputs).__name__}; pass [text] for a single text")
        return method(self, inputs, *args, **kwargs)

    return checked


def held_out(task: Task):
    """(train, held-out) for choosing a setting inside `learn`: the task's val split if it has one, else the
    10th, 20th, ... training example of each class (a class with fewer than 10 keeps all of them for training)."""
    if task.val is not None and len(task.val):
        return task.train, task.val
    rank = torch.zeros(len(task.train), dtype=torch.long)  # position of each example within its class
    for c in task.train.labels.unique():
        rows = (task.train.labels == c).nonzero().flatten()
        rank[rows] = torch.arange(1, len(rows) + 1)
    held = rank % 10 == 0
    return task.train.select((~held).nonzero().flatten().tolist()), task.train.select(held.nonzero().flatten().tolist())
