"""Test-time adaptation: methods that keep a deployed image model accurate while its inputs drift, from unlabeled
batches only. One file per method with `@register`, behind the protocol in base.py; helpers shared by several live
in neutral modules here (base, augment, sources)."""

from __future__ import annotations

from ..registry import Registry, import_all
from .base import SourceModel, TestTimeMethod

METHODS: Registry = Registry("adaptation method")
register = METHODS.register
get = METHODS.lookup

import_all(__name__, __path__)

__all__ = ["METHODS", "SourceModel", "TestTimeMethod", "get", "register"]
