"""The test-time augmentations CoTTA and RMT average over or contrast against, in plain torch (torchvision does
not load with the CPU torch this project pins): per image, colour jitter (brightness, contrast, saturation,
gamma), a small random affine (rotation, translation, scale), a horizontal flip and faint Gaussian noise, with
CoTTA's CIFAR ranges. Input and output: pixels in [0, 1], [n, 3, H, W]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.empty(n, 1, 1, 1, device=device).uniform_(low, high)


def augment(x: torch.Tensor) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    x = x * _uniform(n, 0.8, 1.2, dev)                                        # brightness
    grey = x.mean((1, 2, 3), keepdim=True)
    x = (x - grey) * _uniform(n, 0.85, 1.15, dev) + grey                      # contrast
    lum = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - lum) * _uniform(n, 0.75, 1.25, dev) + lum                        # saturation
    x = x.clamp(1e-6, 1) ** _uniform(n, 0.85, 1.15, dev)                      # gamma
    angle = torch.empty(n, device=dev).uniform_(-15, 15) * math.pi / 180
    scale = torch.empty(n, device=dev).uniform_(0.9, 1.1)
    shift = torch.empty(n, 2, device=dev).uniform_(-1 / 8, 1 / 8)             # 1/16 of the side, in [-1, 1] units
    flip = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x + 0.005 * torch.randn_like(x)).clamp(0, 1)
