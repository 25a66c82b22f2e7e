"""Continual-learning methods, one file each, registered by name (`@register`); helpers shared by several methods
live in neutral modules here (base, settings, training, topblock, gaussian, ridge)."""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import LifelongError
from .base import Learner
from .settings import config_from_dict, settings

METHODS: dict[str, type[Learner]] = {}


def register(cls: type[Learner]) -> type[Learner]:
    METHODS[cls.name] = cls
    return cls


def get(name: str) -> type[Learner]:
    if name not in METHODS:
        raise LifelongError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


# every module of this package is imported, so a method is one file with `@register` and nothing else to edit
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["METHODS", "Learner", "config_from_dict", "get", "register", "settings"]
