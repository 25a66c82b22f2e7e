"""Inject adapters into an unmodified Hugging Face encoder (or an image backbone's StagedModel) by module name,
PEFT-style.

Only the top `blocks` transformer blocks get adapters. They are copied out of the backbone together with their
adapters (`AdaptedTop`), so the frozen lower blocks run once per input and their hidden states feed every task's
adapter: scoring T tasks costs one backbone pass plus the top blocks per routed task, not T backbone passes.

Image backbones (config.modality == "image", backbones/image.py): `forward(hidden)` runs the copied blocks and a
frozen copy of the backbone's pooling tail (a mask, if passed, is ignored: every image has the same hidden shape).
LoRA also goes on 1x1 convolutions, and the default targets (query, value) mean the model family's own (ViT: q_proj,
v_proj; EfficientNet: the expand and project 1x1 convolutions); a bottleneck goes parallel to each ViT block's MLP
(AdaptFormer), or after each convolutional block: families.py holds this per family.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import LifelongError
from . import bottleneck, lora  # noqa: F401  (they register the kinds "bottleneck" and "lora")
from .families import family
from .quant import check_precision
from .site import KINDS, AdapterSite

DEFAULT_TARGETS = ("query", "value")


@dataclass
class AdapterConfig:
    kind: str = "lora"  # lora | bottleneck
    precision: str = "1bit"  # 1bit | ternary | fp16 | fp32
    rank: int = 8  # LoRA rank, or bottleneck width
    alpha: float = 16.0  # LoRA scale numerator: the update is (alpha / rank) * B A
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))  # LoRA: linear/1x1 conv layers by name
    blocks: int = 2  # adapt the top N transformer blocks (0: all)

    def validate(self) -> AdapterConfig:
        if self.kind not in KINDS:
            raise LifelongError(f"unknown adapter {self.kind!r}; choose one of {', '.join(sorted(KINDS))}")
        check_precision(self.precision)
        if self.rank < 1:
            raise LifelongError("adapter rank/width must be at least 1")
        return self


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: as long as config.num_hidden_layers, the outermost such list."""
    n = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return name, module
    raise LifelongError(f"cannot find the transformer blocks of {type(model).__name__}")


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


class TopBlocks(nn.Module):
    """A copy of the top `blocks` transformer blocks of a backbone (0: all); `forward(hidden, mask)` continues a
    frozen pass from block `split` and mean-pools. Its weights are trainable (methods that train the top blocks)."""

    def __init__(self, backbone_model: nn.Module, blocks: int):
        super().__init__()
        self.prefix, all_blocks = find_blocks(backbone_model)
        n = len(all_blocks)
        k = n if blocks <= 0 else min(blocks, n)
        self.split = n - k  # index of the first copied block
        self.model_config = backbone_model.config
        self.blocks = copy.deepcopy(all_blocks[self.split :])
        self.image = getattr(self.model_config, "modality", "text") == "image"
        self.dim = self.model_config.hidden_size
        self.tail = None
        if self.image:  # the pooling after the last block (a LayerNorm, or EfficientNet's conv head), frozen
            self.tail = copy.deepcopy(backbone_model.tail).requires_grad_(False).eval()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled output on the CPU, where heads live (the blocks run on the device of `hidden`, the backbone's)."""
        if self.image:
            for block in self.blocks:
                hidden = block(hidden)
            return self.tail(hidden).cpu()
        from transformers.masking_utils import create_bidirectional_mask

        from ..backbones.text import mean_pool

        attn = create_bidirectional_mask(config=self.model_config, inputs_embeds=hidden, attention_mask=mask)
        for block in self.blocks:
            hidden = block(hidden, attn)
        return mean_pool(hidden, mask).cpu()


class AdaptedTop(TopBlocks):
    """The top blocks with adapters injected and the blocks' own weights frozen."""

    def __init__(self, backbone_model: nn.Module, config: AdapterConfig):
        config.validate()
        super().__init__(backbone_model, config.blocks)
        self.config = config
        self.targets = list(config.targets)
        if self.image and tuple(self.targets) == DEFAULT_TARGETS:
            self.targets = list(family(self.model_config).targets)
        for p in self.blocks.parameters():
            p.requires_grad_(False)
        self.sites: dict[str, AdapterSite] = {}
        self.sites_local: list[str] = []
        names = [name for name, _ in self.blocks.named_modules()]
        for name in names:
            if any(name.startswith(done + ".") for done in self.sites_local):
                continue  # inside a module already wrapped
            module = self.blocks.get_submodule(name) if name else self.blocks
            site = self._site_for(name, module)
            if site is not None:
                _replace(self.blocks, name, site)
                self.sites_local.append(name)
                i, _, rest = name.partition(".")
                self.sites[f"{self.prefix}.{self.split + int(i)}" + (f".{rest}" if rest else "")] = site
        if not self.sites:
            raise LifelongError(f"no module of the top {len(self.blocks)} blocks matches adapter targets {self.targets}")

    def _site_for(self, name: str, module: nn.Module) -> AdapterSite | None:
        return KINDS[self.config.kind](name, module, self)

    def set_active(self, which: int | str | None) -> None:
        for s in self.sites.values():
            s.active = which

    def new_task(self) -> list[nn.Parameter]:
        for s in self.sites.values():
            s.new_task()
        return [p for s in self.sites.values() for p in s.trainable().values()]

    def freeze(self) -> dict[str, torch.Tensor]:
        """Quantise and bank the current task's adapter; its packed tensors, named `site.matrix.part`."""
        return {f"{n}.{k}": v for n, s in self.sites.items() for k, v in s.freeze().items()}

    def add_packed(self, packed: dict[str, torch.Tensor]) -> None:
        for n, s in self.sites.items():
            s.add_packed({k[len(n) + 1 :]: v for k, v in packed.items() if k.startswith(n + ".")})

    def expected(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Names, shapes and dtypes of one task's packed adapter: a file must match before it is trusted."""
        from .quant import packed_shapes

        out = {}
        for n, s in self.sites.items():
            for k, shape in s.shapes().items():
                for part, spec in packed_shapes(shape, s.precision).items():
                    out[f"{n}.{k}.{part}"] = spec
            for k, shape in s.floats().items():
                out[f"{n}.{k}"] = (shape, torch.float32)
        return out
