"""What LoRA and bottleneck adapters share: a frozen base module plus one small adapter per task.

A site keeps trainable latent matrices for the task being learned and a bank of frozen, already-quantised
weights for every finished task. `active` picks which one the forward pass uses: None (the plain frozen base),
"train" (the latent weights through the quantiser), or a task number. Matrices are quantised; the few scalars
(a bottleneck's learned scale) stay fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from .quant import pack, quantize, unpack


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

    # subclasses: the shapes of their matrices and scalars, their initialisation and their delta
    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def scalar_init(self) -> dict[str, float]:
        return {}

    def init_latent(self) -> None:
        raise NotImplementedError

    def new_task(self) -> None:
        """Fresh trainable weights for the next task."""
        self.latent = nn.ParameterDict({k: nn.Parameter(torch.empty(s)) for k, s in self.shapes().items()})
        self.scalars = nn.ParameterDict({k: nn.Parameter(torch.tensor([v])) for k, v in self.scalar_init().items()})
        self.init_latent()  # on the CPU: the same seeded draws whatever the device
        device = self.device
        if device.type != "cpu":
            self.latent = nn.ParameterDict({k: nn.Parameter(v.detach().to(device)) for k, v in self.latent.items()})
            self.scalars = nn.ParameterDict({k: nn.Parameter(v.detach().to(device)) for k, v in self.scalars.items()})

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
        weights.update({k: packed[k] for k in self.scalar_init()})
        device = self.device
        self.bank.append({k: v.to(device) for k, v in weights.items()})
