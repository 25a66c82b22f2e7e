"""Corruption shift streams: test images through the 15 ImageNet-C corruptions, for test-time adaptation.

The corruptions are the published formulas of Hendrycks & Dietterich (2019), taken from the maintained
`imagecorruptions-imaug` fork because it runs on current numpy and scikit-image; rewriting them would make our
numbers incomparable with the literature. Each image is corrupted under its own numpy seed, derived from
(seed, corruption, severity, index), so a stream is the same on every machine and in any order of work, and the
caller's global random state is left as it was. Results can be cached on disk, keyed by content and package
version, because glass blur and others are slow on big sets.

Protocols, as in the test-time adaptation literature:
  continual  one segment per corruption at one severity, adapting without ever resetting (CoTTA's setting);
  reset      the same segments, going back to the source model before each (Tent's episodic baseline);
  gradual    per corruption, severities 1 2 3 4 5 4 3 2 1, no reset (CoTTA's gradual setting);
  mixed      every corruption's images in one shuffled segment (no single shift to settle on).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LifelongError
from ..io import atomic_write
from ..progress import Progress
from .images import fashion_mnist, load_image_folder, load_npz
from .task import LabelledData

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
PROTOCOLS: tuple[str, ...] = ("continual", "reset", "gradual", "mixed")
GRADUAL = (1, 2, 3, 4, 5, 4, 3, 2, 1)
SHIFT_BENCHMARKS = {"fashion-mnist-c": "Fashion-MNIST test images (1,000, 64 px) through the 15 ImageNet-C corruptions"}
PACKAGE = "imagecorruptions-imaug"
# these two ignore numpy's global state and seed themselves (fresh entropy unless given a seed)
SEEDED_BY_ARGUMENT = {"impulse_noise", "glass_blur"}
MIN_SIZE = 32  # the package refuses smaller images


@dataclass
class Segment:
    """One stretch of a shift stream: images that share a condition, in the order they arrive."""

    name: str  # "gaussian_noise@5"; "mixed@5" for the mixed protocol
    images: torch.Tensor  # uint8 [n, H, W, 3]
    labels: torch.Tensor  # int64 [n]
    corruption: torch.Tensor  # int64 [n], index into CORRUPTIONS
    severity: torch.Tensor  # int64 [n], 1..5
    reset: bool  # the adapting method goes back to the source model before this segment


def check_corruptions(names) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise LifelongError(f"no corruptions given (choose from: {', '.join(CORRUPTIONS)})")
    for name in names:
        if name not in CORRUPTIONS:
            raise LifelongError(f"unknown corruption {name!r} (choose from: {', '.join(CORRUPTIONS)})")
    return names


def check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise LifelongError(f"severity {severity}: must be 1 to 5")
    return int(severity)


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise LifelongError(f"unknown shift protocol {protocol!r} (choose from: {', '.join(PROTOCOLS)})")
    return protocol


def _package():
    """The corruption functions and the package version (part of the cache key). Imported here: it loads
    OpenCV and numba, slow to import and needed only when corrupting."""
    try:
        from importlib.metadata import version

        from imagecorruptions import corrupt
        return corrupt, version(PACKAGE)
    except ImportError:
        raise LifelongError(f"corruption shift streams need the package {PACKAGE} "
                            f"(pip install {PACKAGE}==1.1.5)") from None


def _rgb(images) -> np.ndarray:
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.dtype != np.uint8:
        raise LifelongError(f"images are {x.dtype}; expected uint8 pixels (0-255)")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise LifelongError(f"images have shape {tuple(x.shape)}; expected [n, H, W] or [n, H, W, 3]")
    if min(x.shape[1:3]) < MIN_SIZE:
        raise LifelongError(f"images are {x.shape[1]} x {x.shape[2]}; the corruptions need at least "
                            f"{MIN_SIZE} x {MIN_SIZE} pixels")
    return np.ascontiguousarray(x)


def image_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """A seed per image from a hash, not from a running generator: image i gets the same corruption whether it
    is corrupted alone, in a batch or on another machine."""
    digest = hashlib.sha256(f"{seed}:{corruption}:{severity}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def corrupt_images(images, corruption: str, severity: int, seed: int = 0, cache_dir=None) -> torch.Tensor:
    """uint8 [n, H, W] (grey) or [n, H, W, 3] images -> uint8 [n, H, W, 3] corrupted, the same bits for the same
    inputs in any process; with `cache_dir`, kept in (and read back from) cache_dir/shift/<content hash>.npy."""
    (corruption,) = check_corruptions([corruption])
    severity = check_severity(severity)
    x = _rgb(images)
    corrupt, version = _package()
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(x.tobytes())
        key.update(repr((x.shape, corruption, severity, int(seed), PACKAGE, version)).encode())
        path = Path(cache_dir) / "shift" / f"{key.hexdigest()}.npy"
        if path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.shape == x.shape and cached.dtype == np.uint8:
                    return torch.from_numpy(cached)
            except (OSError, ValueError, EOFError):
                pass  # a damaged cache file is recomputed and replaced
    out = np.empty_like(x)
    state = np.random.get_state()
    try:
        for i in range(len(x)):
            s = image_seed(seed, corruption, severity, i)
            np.random.seed(s)
            kwargs = {"seed": s} if corruption in SEEDED_BY_ARGUMENT else {}
            y = np.asarray(corrupt(x[i], corruption_name=corruption, severity=severity, **kwargs))
            if y.shape != x.shape[1:]:
                raise LifelongError(f"{corruption}@{severity} turned a {x.shape[1:]} image into {y.shape}")
            out[i] = np.clip(y, 0, 255).astype(np.uint8) if y.dtype != np.uint8 else y
    finally:
        np.random.set_state(state)
    if path is not None:
        def write(p):
            with open(p, "wb") as f:  # a file object: np.save would add ".npy" to the temporary name
                np.save(f, out, allow_pickle=False)

        atomic_write(path, write)
    return torch.from_numpy(out)


def _conditions(protocol: str, severity: int, corruptions: list[str]) -> list[tuple[str, int]]:
    if protocol == "gradual":
        return [(c, s) for c in corruptions for s in GRADUAL]
    return [(c, severity) for c in corruptions]


def shift_stream(images, labels, protocol: str = "continual", severity: int = 5, corruptions=CORRUPTIONS,
                 seed: int = 0, cache_dir=None, progress: bool = False) -> list[Segment]:
    """The test images as a stream of segments under `protocol` (see the module docstring). `severity` is
    ignored by `gradual`, which walks through all five."""
    protocol = check_protocol(protocol)
    severity = check_severity(severity)
    corruptions = check_corruptions(corruptions)
    x = torch.from_numpy(_rgb(images))
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if y.shape != (len(x),):
        raise LifelongError(f"{len(x)} images but labels of shape {tuple(y.shape)}")
    conditions = _conditions(protocol, severity, corruptions)
    distinct = list(dict.fromkeys(conditions))  # gradual meets levels 1-4 twice: corrupt them once
    bar = Progress(len(distinct) * len(x), "corrupting", "images", enabled=progress)
    done = {}
    try:
        for c, s in distinct:
            done[c, s] = corrupt_images(x, c, s, seed=seed, cache_dir=cache_dir)
            bar.update(len(x), corruption=f"{c}@{s}")
    finally:
        bar.close()

    def segment(name, parts, reset):
        return Segment(name, torch.cat([done[c, s] for c, s in parts]), y.repeat(len(parts)),
                       torch.tensor([CORRUPTIONS.index(c) for c, _ in parts], dtype=torch.long).repeat_interleave(len(x)),
                       torch.tensor([s for _, s in parts], dtype=torch.long).repeat_interleave(len(x)), reset)

    if protocol == "mixed":
        whole = segment(f"mixed@{severity}", conditions, False)
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(whole.labels)))
        return [Segment(whole.name, whole.images[order], whole.labels[order], whole.corruption[order],
                        whole.severity[order], False)]
    return [segment(f"{c}@{s}", [(c, s)], protocol == "reset") for c, s in conditions]


def stack(rows, classes=None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A LabelledData split (list of (image, class name)) -> uint8 images [n, H, W, 3] (grey repeated to three
    channels), int64 labels in the order of `classes` (default: order of first appearance), the class names."""
    names = list(classes) if classes is not None else list(dict.fromkeys(label for _, label in rows))
    index = {name: i for i, name in enumerate(names)}
    unknown = [label for _, label in rows if label not in index]
    if unknown:
        raise LifelongError(f"class {unknown[0]!r} is not among the given classes ({', '.join(names)})")
    if not rows:
        return torch.zeros(0, 0, 0, 3, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), names
    images = torch.stack([torch.as_tensor(np.asarray(x)) for x, _ in rows])
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 3:
        images = images[..., None].expand(-1, -1, -1, 3).contiguous()
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise LifelongError(f"images of shape {tuple(images.shape)} and type {images.dtype}; "
                            "expected uint8 [H, W] or [H, W, 3]")
    return images, torch.tensor([index[label] for _, label in rows], dtype=torch.long), names


def shift_benchmark(name: str, seed: int = 0) -> LabelledData:
    """The labelled data behind a shift benchmark: its train split is the source domain, its test split the
    images to corrupt. `name` is one of SHIFT_BENCHMARKS, or an .npz file or image folder (`X-c` also finds `X`)."""
    if name in SHIFT_BENCHMARKS:
        return fashion_mnist(seed=seed)
    for candidate in (Path(name), Path(name[:-2]) if name.endswith("-c") else None):
        if candidate is None:
            continue
        if candidate.is_file() and candidate.suffix == ".npz":
            return load_npz(candidate, seed=seed)
        if candidate.is_dir():
            return load_image_folder(candidate, seed=seed)
    raise LifelongError(f"unknown shift benchmark {name!r} (choose from: {', '.join(SHIFT_BENCHMARKS)}, "
                        "or an .npz file or image folder)")
