"""Continual-learning methods, one file each, registered by name (`@register`); helpers shared by several methods
live in neutral modules here (base, settings, training, topblock, gaussian, ridge)."""

from __future__ import annotations

from ..registry import Registry, import_all
from .base import Learner
from .settings import config_from_dict, settings

METHODS: Registry = Registry("method")
register = METHODS.register
get = METHODS.lookup

import_all(__name__, __path__)  # a method is one file with `@register` and nothing else to edit

__all__ = ["METHODS", "Learner", "config_from_dict", "get", "register", "settings"]
