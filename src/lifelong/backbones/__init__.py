"""Pretrained encoders behind one interface: `encode(inputs) -> [n, dim]` frozen, `forward(inputs)` trainable.

Text: any Hugging Face encoder (default all-MiniLM-L6-v2). Images: `efficientnet-lite0`, `vit:<id or dir>` (see
image_models.py). `load_backbone` picks by name.
"""

from .cache import FeatureCache
from .image_models import EFFICIENTNET, is_image_backbone, load_image_backbone
from .text import DEFAULT_TEXT_BACKBONE, TextEncoder

DEFAULT_IMAGE_BACKBONE = EFFICIENTNET


def load_backbone(name: str = DEFAULT_TEXT_BACKBONE, **kwargs):
    if is_image_backbone(name):
        kwargs.pop("max_length", None)  # a token limit; images have a resolution instead
        return load_image_backbone(name, **kwargs)
    return TextEncoder(name, **kwargs)


def stream_modality(stream) -> str:
    """'image' when the stream's inputs are image tensors, else 'text'."""
    import torch

    return "image" if isinstance(stream.tasks[0].train.inputs, torch.Tensor) else "text"


def default_backbone(stream) -> str:
    return DEFAULT_IMAGE_BACKBONE if stream_modality(stream) == "image" else DEFAULT_TEXT_BACKBONE


def check_modality(encoder, stream) -> None:
    """A text encoder cannot read images, nor the reverse: say so in one line instead of failing deep inside."""
    from ..errors import LifelongError

    want, have = stream_modality(stream), getattr(encoder, "modality", "text")
    if want != have:
        hint = DEFAULT_IMAGE_BACKBONE if want == "image" else DEFAULT_TEXT_BACKBONE
        raise LifelongError(f"benchmark {stream.name!r} has {want} inputs but backbone {encoder.name!r} is a {have} "
                            f"encoder; choose a {want} backbone, e.g. --backbone {hint}")


__all__ = ["DEFAULT_IMAGE_BACKBONE", "DEFAULT_TEXT_BACKBONE", "FeatureCache", "TextEncoder", "check_modality",
           "default_backbone", "load_backbone"]
