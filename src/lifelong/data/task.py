"""The two data contracts: a `Task` (new classes with their splits) and a `Stream` (ordered tasks).

Labels inside a stream are global class ids numbered in order of first appearance, so the classes seen after
task i are exactly ids `0 .. stream.seen_classes(i) - 1` and a learner's score matrix needs no remapping.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import LifelongError


@dataclass(frozen=True)
class Examples:
    """Inputs (texts, or an image tensor [n, ...]) and their labels as a LongTensor [n]."""

    inputs: Sequence
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def nbytes(self) -> int:
        """What keeping these examples costs: UTF-8 text or tensor bytes, plus the labels."""
        if isinstance(self.inputs, torch.Tensor):
            size = self.inputs.numel() * self.inputs.element_size()
        else:
            size = sum(len(x.encode("utf-8")) for x in self.inputs)
        return size + self.labels.numel() * self.labels.element_size()

    def select(self, index: Sequence[int]) -> Examples:
        index = list(index)
        if isinstance(self.inputs, torch.Tensor):
            inputs = self.inputs[torch.as_tensor(index, dtype=torch.long)]
        else:
            inputs = [self.inputs[i] for i in index]
        return Examples(inputs, self.labels[torch.as_tensor(index, dtype=torch.long)])

    @staticmethod
    def concat(parts: Sequence[Examples]) -> Examples:
        parts = [p for p in parts if p is not None and len(p)]
        if not parts:
            return Examples([], torch.empty(0, dtype=torch.long))
        if isinstance(parts[0].inputs, torch.Tensor):
            inputs = torch.cat([p.inputs for p in parts])
        else:
            inputs = [x for p in parts for x in p.inputs]
        return Examples(inputs, torch.cat([p.labels for p in parts]))


@dataclass(frozen=True)
class Task:
    index: int
    classes: list[int]  # global ids this task introduces (empty for a domain-incremental task after the first)
    train: Examples
    val: Examples | None
    test: Examples
    name: str = ""


@dataclass(frozen=True)
class Stream:
    name: str
    tasks: list[Task]
    class_names: list[str]  # global id -> name
    scenario: str = "class-incremental"
    oos: dict[str, list] | None = None  # out-of-scope inputs per split ("val", "test"), where the data set has them

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def seen_classes(self, i: int) -> int:
        return sum(len(t.classes) for t in self.tasks[: i + 1])


@dataclass
class LabelledData:
    """A labelled data set before it is cut into tasks: splits of (input, class name) pairs."""

    name: str
    train: list[tuple[object, str]]
    test: list[tuple[object, str]]
    val: list[tuple[object, str]] = field(default_factory=list)
    source: str = ""  # file or package it came from, for error messages
    tasks: dict[str, list[str]] | None = None  # the data's own tasks (name -> classes, arrival order), if it has them

    def class_names(self) -> list[str]:
        """Class names in order of first appearance in train (stable, reproducible)."""
        return list(dict.fromkeys(label for _, label in self.train))


def _examples(rows, class_id: dict[str, int], keep: set[str], stack) -> Examples:
    rows = [(x, class_id[y]) for x, y in rows if y in keep]
    inputs = [x for x, _ in rows]
    if stack and inputs:
        inputs = torch.stack(inputs)
    return Examples(inputs, torch.tensor([y for _, y in rows], dtype=torch.long))


def check_splits(data: LabelledData) -> None:
    """Every evaluated class must have been trained on; otherwise accuracy on it is meaningless."""
    known = set(data.class_names())
    if not known:
        raise LifelongError(f"{data.source or data.name}: no training examples")
    for split in ("test", "val"):
        for label in dict.fromkeys(y for _, y in getattr(data, split)):
            if label not in known:
                raise LifelongError(
                    f"{data.source or data.name}: {split} label {label!r} never appears in the training data"
                )


def class_incremental(
    data: LabelledData,
    groups: Sequence[Sequence[str]] | None = None,
    classes_per_task: int | None = None,
    seed: int = 0,
    task_names: Sequence[str] | None = None,
) -> Stream:
    """Cut `data` into tasks of disjoint classes: explicit `groups` of class names, or a seeded class order
    with `classes_per_task` classes per task (the last task takes the remainder)."""
    check_splits(data)
    names = data.class_names()
    if groups is None:
        if not classes_per_task or classes_per_task < 1:
            raise LifelongError("classes_per_task must be a positive integer")
        order = sorted(names)
        random.Random(seed).shuffle(order)
        groups = [order[i : i + classes_per_task] for i in range(0, len(order), classes_per_task)]
    known = set(names)
    seen: set[str] = set()
    for g in groups:
        if not g:
            raise LifelongError(f"{data.source or data.name}: empty class group")
        for c in g:
            if c not in known:
                raise LifelongError(f"{data.source or data.name}: class {c!r} has no training examples")
            if c in seen:
                raise LifelongError(f"{data.source or data.name}: class {c!r} appears in two tasks")
            seen.add(c)
    ordered = [c for g in groups for c in g]
    class_id = {c: i for i, c in enumerate(ordered)}
    stack = bool(data.train) and isinstance(data.train[0][0], torch.Tensor)
    tasks = []
    for i, g in enumerate(groups):
        keep = set(g)
        train = _examples(data.train, class_id, keep, stack)
        test = _examples(data.test, class_id, keep, stack)
        val = _examples(data.val, class_id, keep, stack) if data.val else None
        name = task_names[i] if task_names else f"task{i}"
        if len(test) == 0:
            raise LifelongError(f"{data.source or data.name}: task {name!r} has no test examples")
        tasks.append(Task(i, [class_id[c] for c in g], train, val, test, name))
    return Stream(data.name, tasks, ordered)


def domain_incremental(domains: Sequence[LabelledData], name: str = "domains") -> Stream:
    """One task per domain over one shared label set; each task only introduces classes not seen before."""
    class_id: dict[str, int] = {}
    tasks = []
    for i, d in enumerate(domains):
        check_splits(d)
        new = [c for c in d.class_names() if c not in class_id]
        for c in new:
            class_id[c] = len(class_id)
        keep = set(class_id)
        stack = isinstance(d.train[0][0], torch.Tensor)
        tasks.append(
            Task(
                i,
                [class_id[c] for c in new],
                _examples(d.train, class_id, keep, stack),
                _examples(d.val, class_id, keep, stack) if d.val else None,
                _examples(d.test, class_id, keep, stack),
                d.name,
            )
        )
        if len(tasks[-1].test) == 0:
            raise LifelongError(f"{name}: domain {d.name!r} has no test examples")
    return Stream(name, tasks, list(class_id), scenario="domain-incremental")
