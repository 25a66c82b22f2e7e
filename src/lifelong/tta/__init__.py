"""Test-time adaptation: methods that keep a deployed image model accurate while its inputs drift, from unlabeled
batches only. One file per method with `@register`, behind the protocol in base.py; helpers shared by several live
in neutral modules here (base, augment)."""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import LifelongError
from .base import SourceModel, TestTimeMethod

METHODS: dict[str, type[TestTimeMethod]] = {}


def register(cls: type[TestTimeMethod]) -> type[TestTimeMethod]:
    METHODS[cls.name] = cls
    return cls


def get(name: str) -> type[TestTimeMethod]:
    if name not in METHODS:
        raise LifelongError(f"unknown adaptation method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["METHODS", "SourceModel", "TestTimeMethod", "get", "register"]
