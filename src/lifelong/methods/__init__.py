"""Continual-learning methods, one file each, registered by name."""

from __future__ import annotations

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


from . import (  # noqa: F401  (registration side effect)
    adapters,
    analytic,
    aper,
    ekpc,
    ewc,
    finetune,
    inflora,
    joint,
    l2,
    lda,
    lwf,
    ncm,
    probe,
    ranpac,
    replay,
    slca,
    wa,
)

__all__ = ["METHODS", "Learner", "config_from_dict", "get", "register", "settings"]
