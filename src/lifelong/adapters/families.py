"""Where adapters go in each image model family, keyed by the backbone's `config.model_type`: the backbones layer
describes a model's structure only, and how to adapt it is this layer's knowledge.

Text encoders need no entry: the default LoRA targets (query, value) are their Hugging Face module names, and a
bottleneck goes beside each block's MLP output module (bottleneck.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LifelongError


@dataclass(frozen=True)
class Family:
    targets: tuple[str, ...]  # the modules the default LoRA targets (query, value) stand for
    bottleneck: str  # a bottleneck goes parallel to each block's module of this name, or "block": after each block


FAMILIES = {
    "vit": Family(("q_proj", "v_proj"), "mlp"),  # Hugging Face ViT: AdaptFormer beside each block's MLP
    "efficientnet": Family(("_expand_conv", "_project_conv"), "block"),  # its 1x1 convolutions; after each MBConv
}


def family(model_config) -> Family:
    """The adapter placement of an image backbone's model family."""
    kind = getattr(model_config, "model_type", None)
    if kind not in FAMILIES:
        raise LifelongError(f"no adapter placement for image models of type {kind!r} (known: "
                            f"{', '.join(sorted(FAMILIES))}); add one in lifelong/adapters/families.py")
    return FAMILIES[kind]
