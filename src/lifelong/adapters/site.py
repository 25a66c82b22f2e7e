"""What every adapter kind shares: a frozen base module plus one small adapter per task, and the registry of kinds.

A kind is one file: an `AdapterSite` subclass that declares its parameters (`params`: matrices the precision
quantises, vectors and scalars kept in fp32, each with its shape and initialisation) and its forward, and a
function registered by name (`@register_kind("lora")`) that wraps a module of the top blocks when the kind applies
to it (which module types a kind adapts is the kind's own business, not the injector's).

A site keeps trainable latent tensors for the task being learned and a bank of frozen, already-quantised weights
for every finished task. `active` picks which one the forward pass uses: None (the plain frozen base), "train" (the
latent weights through the quantiser), or a task number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .quant import pack, quantize, unpack

# kind name -> wrap(name, module, top) -> AdapterSite | None; `top` is the AdaptedTop being built (its config,
# targets, model config and modality say where the kind applies)
KINDS: dict[str, Callable] = {}


def register_kind(name: str):
    def add(wrap: Callable) -> Callable:
        KINDS[name] = wrap
        return wrap

    return add


@dataclass(frozen=True)
class Param:
    """One adapter parameter: its shape, whether the precision quantises it (matrices) or it stays fp32 (vectors,
    scalars), and its initialisation: a constant, or a function filling the tensor in place (drawn on the CPU)."""

    shape: tuple[int, ...]
    quantised: bool = True
    init: float | Callable[[torch.Tensor], object] = 0.0


class AdapterSite(nn.Module):
    def __init__(self, base: nn.Module, precision: str):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.precision = precision
        self.latent = nn.ParameterDict()
        self.scalars = nn.ParameterDict()
        self.bank: list[dict[str, torch.Tensor]] = []
        self.active: int | str | None = None

    # a kind declares its parameters (in initialisation order) and its forward
    def params(self) -> dict[str, Param]:
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The quantised matrices' shapes."""
        return {k: p.shape for k, p in self.params().items() if p.quantised}

    def floats(self) -> dict[str, tuple[int, ...]]:
        """The fp32 vectors' and scalars' shapes."""
        return {k: p.shape for k, p in self.params().items() if not p.quantised}

    def new_task(self) -> None:
        """Fresh trainable weights for the next task."""
        params = self.params()
        self.latent = nn.ParameterDict({k: nn.Parameter(torch.empty(p.shape)) for k, p in params.items() if p.quantised})
        self.scalars = nn.ParameterDict({k: nn.Parameter(torch.empty(p.shape)) for k, p in params.items()
                                         if not p.quantised})
        with torch.no_grad():  # on the CPU: the same seeded draws whatever the device
            for k, p in params.items():
                t = self.latent[k] if p.quantised else self.scalars[k]
                t.fill_(p.init) if isinstance(p.init, (int, float)) else p.init(t)
        device = self.device
        if device.type != "cpu":
            self.latent = nn.ParameterDict({k: nn.Parameter(v.detach().to(device)) for k, v in self.latent.items()})
            self.scalars = nn.ParameterDict({k: nn.Parameter(v.detach().to(device)) for k, v in self.scalars.items()})

    def trainable(self) -> dict[str, nn.Parameter]:
        """The task being learned's parameters, by name (after `new_task`)."""
        return {**self.latent, **self.scalars}

    def fix(self, name: str, value: torch.Tensor) -> None:
        """Set one of the task's parameters and stop training it (a method that designs it, as InfLoRA's A)."""
        t = self.trainable()[name]
        t.requires_grad_(False)
        t.copy_(value)

    def discard(self) -> None:
        """Drop the task being learned without banking it."""
        self.latent, self.scalars = nn.ParameterDict(), nn.ParameterDict()

    @property
    def device(self) -> torch.device:
        """The frozen base module's device: the adapters train and run there; packed weights are kept on the CPU."""
        from ..devices import module_device

        return module_device(self.base)

    def weights(self) -> dict[str, torch.Tensor]:
        if self.active == "train":
            out = {k: quantize(v, self.precision) for k, v in self.latent.items()}
            out.update(dict(self.scalars.items()))
            return out
        return self.bank[self.active]

    def freeze(self) -> dict[str, torch.Tensor]:
        """End the task: store the quantised weights in the bank; return their packed form."""
        packed = {}
        for k, v in self.latent.items():
            for part, t in pack(v.detach().cpu(), self.precision).items():
                packed[f"{k}.{part}"] = t
        for k, v in self.scalars.items():
            packed[k] = v.detach().float().cpu().clone()
        self.add_packed(packed)
        self.latent, self.scalars = nn.ParameterDict(), nn.ParameterDict()
        return packed

    def add_packed(self, packed: dict[str, torch.Tensor]) -> None:
        weights = {}
        for k, shape in self.shapes().items():
            parts = {name[len(k) + 1 :]: t for name, t in packed.items() if name.startswith(k + ".")}
            weights[k] = unpack(parts, shape, self.precision)
        weights.update({k: packed[k] for k in self.floats()})
        device = self.device
        self.bank.append({k: v.to(device) for k, v in weights.items()})
