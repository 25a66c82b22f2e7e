"""Parameter-efficient adapters at any precision: LoRA and bottleneck, injected by module name."""

from .inject import AdaptedTop, AdapterConfig, TopBlocks, find_blocks
from .quant import PRECISIONS, pack, quantize, unpack

__all__ = ["PRECISIONS", "AdaptedTop", "AdapterConfig", "TopBlocks", "find_blocks", "pack", "quantize", "unpack"]
