"""A frozen image encoder with the text encoder's interface: `encode(images) -> [n, dim]`, `forward` trainable,
`encode_split(images, split)` for adapters, `weights_hash`.

Images are uint8 (0-255) or float (0-1) arrays/tensors, H x W (grey) or H x W x C (C = 1, 3 or 4; alpha is
dropped), a stacked batch [n, H, W(, C)], or file paths read with Pillow. Preprocessing is plain torch: grey is
repeated to 3 channels, the image is resized (bilinear, antialiased, no crop) to the encoder's `resolution`, then
normalised with the mean/std its weights were trained with.

`resolution=None` (the default for EfficientNet-Lite0) runs the fully convolutional network at each image's own
size: the data set fixes the input size (Split Fashion-MNIST: 64 x 64), so small images are not upsampled to 224
at 12x the cost. A ViT always runs at one size (its config's `image_size` unless set): position embeddings fix it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..devices import computing_in, frozen_dtype, resolve_device, train_dtype
from ..errors import LifelongError
from ..progress import Progress

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class StagedModel(nn.Module):
    """stem -> blocks -> tail (pooled feature), so the frozen lower blocks can run once and the top ones be adapted.

    `config` describes the structure only, with the Hugging Face field names where there are some: the family
    (`model_type`, which the adapters layer keys its own placement table on), num_hidden_layers, hidden_size, and
    each block's output width (`block_dims`, which `encode_split` pools).
    """

    def __init__(self, stem: nn.Module, blocks: nn.ModuleList, tail: nn.Module, dim: int, model_type: str,
                 block_dims: list[int]):
        super().__init__()
        self.stem, self.blocks, self.tail = stem, blocks, tail
        self.config = SimpleNamespace(modality="image", model_type=model_type, num_hidden_layers=len(blocks),
                                      hidden_size=dim, block_dims=block_dims)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.stem(pixels)
        for block in self.blocks:
            h = block(h)
        return self.tail(h)


def _read(x) -> torch.Tensor:
    """One image as a tensor [H, W, C]."""
    if isinstance(x, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(x) as im:
                x = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise LifelongError(f"{x}: cannot read image ({e})") from None
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))
    if t.ndim == 2:
        t = t[..., None]
    if t.ndim != 3 or t.shape[-1] not in (1, 3, 4):
        raise LifelongError(f"image of shape {tuple(t.shape)}: expected H x W or H x W x C with C = 1, 3 or 4")
    return t


def _rows(images) -> Sequence:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor) and images.ndim not in (3, 4):
        raise LifelongError(f"image batch of shape {tuple(images.shape)}: expected [n, H, W] or [n, H, W, C]")
    return images


class ImageEncoder(nn.Module):
    """`forward(images)` is differentiable (for methods that train the backbone); `encode(images)` is batched
    frozen inference. Images of different sizes are batched by size, so a feature depends on its image only."""

    modality = "image"

    def __init__(self, name: str, model: StagedModel, resolution: int | None, mean, std, batch_size: int = 64,
                 interpolate: bool = False, device: str | torch.device = "cpu", autocast: str | None = None):
        super().__init__()
        self.name, self.model, self.resolution, self.batch_size = name, model, resolution, batch_size
        self.interpolate = interpolate  # ViT: positional embeddings interpolated to a non-native resolution
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.model.eval()
        self.device = resolve_device(device)
        self.to(self.device)
        self.frozen_dtype = frozen_dtype(self.device, autocast, "image")  # the frozen pass's dtype (None: fp32)
        self.train_dtype = train_dtype(autocast)  # what training computes in (None: fp32)
        self.dim = model.config.hidden_size

    @property
    def max_length(self):
        """What besides the weights changes the features (the feature cache keys on it, as on a token limit)."""
        return f"image{self.resolution or 'native'}"

    def pixels(self, images: Sequence[torch.Tensor], normalise: bool = True) -> torch.Tensor:
        """Same-sized images [H, W, C] -> float batch [n, 3, R, R], normalised (else in [0, 1], for methods that
        augment pixels before the network normalises them: tta/)."""
        x = torch.stack(list(images)).to(self.device)
        x = x.float() / 255 if not x.is_floating_point() else x.float()
        x = x.permute(0, 3, 1, 2)
        x = x[:, :3] if x.shape[1] >= 3 else x.expand(-1, 3, -1, -1)
        r = self.resolution
        if r and tuple(x.shape[-2:]) != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std if normalise else x

    def _groups(self, images, progress: bool = False, desc: str = "embed"):
        """(indices, pixel batch) over all images: batches of `batch_size`, split by image size."""
        images = _rows(images)
        bar = Progress(len(images), desc, "images", enabled=progress)
        for s in range(0, len(images), self.batch_size):
            part = [_read(images[i]) for i in range(s, min(s + self.batch_size, len(images)))]
            by_size: dict[tuple, list[int]] = {}
            for j, t in enumerate(part):
                by_size.setdefault(tuple(t.shape[:2]), []).append(j)
            for js in by_size.values():
                yield [s + j for j in js], self.pixels([part[j] for j in js])
            bar.update(len(part))
        bar.close()

    def _stem(self, pixels):
        return self.model.stem(pixels, interpolate_pos_encoding=True) if self.interpolate else self.model.stem(pixels)

    def forward(self, images) -> torch.Tensor:
        images = _rows(images)
        out = [None] * len(images)
        for idx, pixels in self._groups(images):
            h = self._stem(pixels)
            for block in self.model.blocks:
                h = block(h)
            for i, f in zip(idx, self.model.tail(h)):
                out[i] = f
        return torch.stack(out).cpu()  # heads live on the CPU (devices.py)

    @torch.inference_mode()
    def encode(self, images, progress: bool = False) -> torch.Tensor:
        """Frozen features [n, dim]."""
        was_training = self.model.training
        self.model.eval()
        images = _rows(images)
        out = torch.empty(len(images), self.dim)
        for idx, pixels in self._groups(images, progress):
            with computing_in(self.device, self.frozen_dtype):
                h = self._stem(pixels)
                for block in self.model.blocks:
                    h = block(h)
                out[idx] = self.model.tail(h).float().cpu()
        self.model.train(was_training)
        return out

    @property
    def level_dims(self) -> list[int]:
        """Widths of the block outputs `encode_split` pools (channels on a CNN)."""
        return list(self.model.config.block_dims)

    @torch.inference_mode()
    def encode_split(self, images, split: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """One frozen pass giving, per image, the hidden state entering block `split` (ViT: tokens [t, d];
        CNN: feature map [C, H, W]), the pooled final feature, and every block's output mean-pooled (over tokens
        or positions) and concatenated [n, sum(level_dims)]."""
        self.model.eval()
        images = _rows(images)
        hidden: list[torch.Tensor] = [None] * len(images)
        pooled = torch.empty(len(images), self.dim)
        levels = torch.empty(len(images), sum(self.level_dims))
        for idx, pixels in self._groups(images):
            with computing_in(self.device, self.frozen_dtype):
                h = self._stem(pixels)
                means = []
                for b, block in enumerate(self.model.blocks):
                    if b == split:
                        for row, i in enumerate(idx):
                            hidden[i] = h[row].float().clone()
                    h = block(h)
                    means.append(h.float().flatten(2).mean(2) if h.ndim == 4 else h.float().mean(1))
                if split >= len(self.model.blocks):
                    for row, i in enumerate(idx):
                        hidden[i] = h[row].float().clone()
                pooled[idx] = self.model.tail(h).float().cpu()
            levels[idx] = torch.cat(means, dim=1).cpu()
        return hidden, pooled, levels

    def weights_hash(self) -> str:
        """SHA-256 over parameter names and values and the preprocessing: what a stored model depends on."""
        h = hashlib.sha256()
        for k, v in self.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(f"resolution={self.resolution};interpolate={self.interpolate}".encode())
        h.update(torch.cat([self.mean.flatten(), self.std.flatten()]).numpy().tobytes())
        return h.hexdigest()
