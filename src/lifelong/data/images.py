"""Labelled images: a folder per class, NumPy .npz arrays, and Split Fashion-MNIST from its Debian package.

Every loader returns a `LabelledData` whose inputs are uint8 tensors (H x W grey or H x W x 3 RGB) of one size,
so `class_incremental` stacks them into one tensor per split and the feature caches key them by content.

Split Fashion-MNIST (Xiao et al., 2017; benchmark `fashion-mnist`): 10 clothing classes, 5 tasks of 2 classes in
label order (T-shirt/top, Trouser | Pullover, Dress | Coat, Sandal | Shirt, Sneaker | Bag, Ankle boot). So that
EfficientNet-Lite0 embeds it in a few minutes on 2 CPU cores, each class keeps a seeded subsample of 500 of its
6,000 training and 100 of its 1,000 test images (5,000 train + 1,000 test), upsampled from 28 x 28 to 64 x 64
(bilinear) at load time; EfficientNet runs at the images' own size. The data is found at $LIFELONG_FASHION_MNIST
(a folder with the four original IDX files, gzipped or not), else where `apt-get install dataset-fashion-mnist`
puts them (/usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LifelongError
from .rows import hold_out
from .task import LabelledData, Stream, check_splits, class_incremental

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}

FASHION_ENV = "LIFELONG_FASHION_MNIST"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_TRAIN_PER_CLASS, FASHION_TEST_PER_CLASS, FASHION_SIZE = 500, 100, 64


# --- IDX (the MNIST file format) ----------------------------------------------------------------------------


def read_idx(path) -> np.ndarray:
    """An IDX file (gzipped or not): 2 zero bytes, a type code (0x08: uint8), the number of dimensions, the
    dimensions as big-endian uint32, then the values."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise LifelongError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] < 1:
        raise LifelongError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LifelongError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise LifelongError(f"{path}: IDX data has {len(raw) - header} bytes, its header says {size} {shape}")
    return np.frombuffer(raw, np.uint8, size, header).reshape(shape)


# --- Fashion-MNIST ----------------------------------------------------------------------------------------------


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def locate_fashion_mnist() -> Path:
    """$LIFELONG_FASHION_MNIST, else the Debian package's folder; a folder missing a file is an error."""
    env = os.environ.get(FASHION_ENV)
    folder = Path(env) if env else FASHION_DEBIAN
    stems = [s for pair in FASHION_FILES.values() for s in pair]
    missing = [s for s in stems if _find(folder, s) is None]
    if missing:
        where = f"${FASHION_ENV}={env}" if env else str(FASHION_DEBIAN)
        raise LifelongError(f"Fashion-MNIST not found ({where} has no {missing[0]}[.gz]): install it with "
                            f"`apt-get install dataset-fashion-mnist`, or set {FASHION_ENV} to a folder of its IDX files")
    return folder


def _upsample(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images.copy())
    if x.shape[-1] == size:
        return x
    x = F.interpolate(x[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8)


def fashion_mnist(root=None, train_per_class: int = FASHION_TRAIN_PER_CLASS,
                  test_per_class: int = FASHION_TEST_PER_CLASS, size: int = FASHION_SIZE, seed: int = 0) -> LabelledData:
    """The seeded per-class subsample described in the module docstring (0 per class: keep all)."""
    folder = Path(root) if root else locate_fashion_mnist()
    splits = {}
    for split, (images_stem, labels_stem) in FASHION_FILES.items():
        images_path, labels_path = _find(folder, images_stem), _find(folder, labels_stem)
        if images_path is None or labels_path is None:
            raise LifelongError(f"{folder}: no {images_stem if images_path is None else labels_stem}[.gz]")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise LifelongError(f"{images_path}: {images.shape} images do not match {labels.shape} labels")
        if labels.size and labels.max() >= len(FASHION_CLASSES):
            raise LifelongError(f"{labels_path}: label {labels.max()} is not a Fashion-MNIST class (0-9)")
        per_class = train_per_class if split == "train" else test_per_class
        rng = random.Random(f"{seed}:{split}")
        keep = []
        for c in range(len(FASHION_CLASSES)):
            index = np.flatnonzero(labels == c).tolist()
            keep += sorted(rng.sample(index, min(per_class, len(index)))) if per_class else index
        keep.sort()
        pixels = _upsample(images[keep], size)
        splits[split] = [(pixels[i], FASHION_CLASSES[int(labels[j])]) for i, j in enumerate(keep)]
    data = LabelledData("fashion-mnist", splits["train"], splits["test"], source=str(folder))
    check_splits(data)
    return data


def fashion_mnist_stream(seed: int = 0, classes_per_task: int | None = None, **kw) -> Stream:
    """Split Fashion-MNIST: tasks of `classes_per_task` (default 2) classes in label order."""
    data = fashion_mnist(seed=seed, **kw)
    k = classes_per_task or 2
    names = [c for c in FASHION_CLASSES if c in set(data.class_names())]
    groups = [names[i : i + k] for i in range(0, len(names), k)]
    return class_incremental(data, groups=groups, task_names=["+".join(g) for g in groups])


# --- a folder per class -----------------------------------------------------------------------------------------


def read_image(path, size: int | None) -> torch.Tensor:
    """One file as an RGB uint8 tensor [H, W, 3], resized (bilinear) to size x size when `size` is given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return torch.from_numpy(np.array(im))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise LifelongError(f"{path}: cannot read image ({e})") from None


def _class_dirs(folder: Path) -> list[tuple[str, list[Path]]]:
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out.append((d.name, files))
    return out


def load_image_folder(root, size: int = 224, test_fraction: float = 0.2, seed: int = 0) -> LabelledData:
    """`root/<class>/<image>` (a seeded, per-class hold-out of `test_fraction` becomes the test split), or
    `root/train/<class>/...` and `root/test/<class>/...`. Images are read with Pillow as RGB and resized to
    `size` x `size` so they stack (None: keep their size, which must then be the same for all)."""
    root = Path(root)
    if not root.is_dir():
        raise LifelongError(f"{root}: not a folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        splits = {s: [(read_image(f, size), label) for label, files in _class_dirs(root / s) for f in files]
                  for s in ("train", "test")}
        train, test = splits["train"], splits["test"]
    else:
        rows = [(f, label) for label, files in _class_dirs(root) for f in files]
        train, test = hold_out(rows, test_fraction, seed)
        train = [(read_image(f, size), label) for f, label in train]
        test = [(read_image(f, size), label) for f, label in test]
    if not train:
        raise LifelongError(f"{root}: no images (expected one folder of images per class, {', '.join(sorted(IMAGE_SUFFIXES))})")
    shapes = {tuple(x.shape) for x, _ in train + test}
    if len(shapes) > 1:
        raise LifelongError(f"{root}: images have different sizes {sorted(shapes)[:2]}...; give a size to resize to")
    if not test:
        raise LifelongError(f"{root}: no test images (every class has a single image)")
    data = LabelledData(root.name, train, test, source=str(root))
    check_splits(data)
    return data


# --- NumPy arrays -----------------------------------------------------------------------------------------------


def load_npz(path, test_fraction: float = 0.2, seed: int = 0) -> LabelledData:
    """An .npz with `x` (uint8 [n, H, W] or [n, H, W, C]) and `y` (labels: integers or strings), and optionally
    `x_test`/`y_test` (else a seeded per-class hold-out) and `class_names` (names of integer labels)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise LifelongError(f"{path}: cannot read .npz ({e})") from None
    for k in ("x", "y"):
        if k not in arrays:
            raise LifelongError(f"{path}: no array {k!r} (has: {', '.join(arrays) or 'none'})")
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None

    def rows(x_key, y_key):
        x, y = arrays[x_key], arrays[y_key]
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)):
            raise LifelongError(f"{path}: {x_key!r} has shape {x.shape}; expected [n, H, W] or [n, H, W, C]")
        if y.ndim != 1 or len(y) != len(x):
            raise LifelongError(f"{path}: {y_key!r} has shape {y.shape}; expected [{len(x)}] labels")
        if x.dtype != np.uint8:
            raise LifelongError(f"{path}: {x_key!r} is {x.dtype}; expected uint8 pixels (0-255)")
        labels = [_label(v, names, path) for v in y.tolist()]
        return [(torch.from_numpy(x[i].copy()), labels[i]) for i in range(len(x))]

    train = rows("x", "y")
    if "x_test" in arrays and "y_test" in arrays:
        test = rows("x_test", "y_test")
    else:
        train, test = hold_out(train, test_fraction, seed)
    if not test:
        raise LifelongError(f"{path}: no test examples (no x_test/y_test and every class has a single example)")
    data = LabelledData(path.stem, train, test, source=str(path))
    check_splits(data)
    return data


def _label(value, names, path) -> str:
    if names is not None and isinstance(value, int):
        if not 0 <= value < len(names):
            raise LifelongError(f"{path}: label {value} has no entry in class_names ({len(names)} names)")
        return names[value]
    return str(value)
