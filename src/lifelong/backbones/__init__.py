"""Pretrained encoders behind one interface: `encode(inputs) -> [n, dim]` frozen, `forward(inputs)` trainable."""

from .cache import FeatureCache
from .text import DEFAULT_TEXT_BACKBONE, TextEncoder


def load_backbone(name: str = DEFAULT_TEXT_BACKBONE, **kwargs):
    return TextEncoder(name, **kwargs)


__all__ = ["DEFAULT_TEXT_BACKBONE", "FeatureCache", "TextEncoder", "load_backbone"]
