"""Kinds registered by name with a decorator, one module per kind, every module of the package imported: how
`methods/` and `tta/` both find their members, so adding one is one file."""

from __future__ import annotations

import importlib
import pkgutil

from .errors import LifelongError


class Registry(dict):
    """name -> class, filled by `@registry.register` on classes with a `name`."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, cls):
        self[cls.name] = cls
        return cls

    def lookup(self, name: str):
        if name not in self:
            raise LifelongError(f"unknown {self.what} {name!r}; choose one of {', '.join(sorted(self))}")
        return self[name]


def import_all(package: str, path) -> None:
    """Import every module of a package (its `__name__`, `__path__`), so their `@register` lines run."""
    for name in sorted(m.name for m in pkgutil.iter_modules(path)):
        importlib.import_module(f"{package}.{name}")
