"""Benchmarks by name (or a user file or image folder) -> a `Stream`. New benchmarks register one builder here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import LifelongError
from . import clinc150, images, wordnet
from .task import Stream, class_incremental

BENCHMARKS: dict[str, tuple[str, Callable[..., Stream]]] = {
    "clinc150": ("CLINC150 intents, 10 tasks (one per domain, 15 intents each)", lambda **kw: clinc150.stream()),
    "fashion-mnist": ("Split Fashion-MNIST images, 5 tasks of 2 classes (500 train + 100 test per class, 64 px)",
                      images.fashion_mnist_stream),
    "wordnet": ("WordNet noun supersenses from glosses, 5 tasks of 4 (300 train + 100 test per class)",
                wordnet.stream),
}

FILE_SUFFIXES = (".jsonl", ".json", ".csv")
IMAGE_DATA_SUFFIXES = (".npz",)


def check_benchmark(benchmark: str, classes_per_task: int | None = None) -> str:
    """What `benchmark` names, without loading it: "name" (registered), "text" (a data file) or "images" (an .npz
    or a folder); a LifelongError for anything else, or a file given no `classes_per_task`."""
    if benchmark in BENCHMARKS:
        return "name"
    path = Path(benchmark)
    if path.suffix.lower() in FILE_SUFFIXES:
        if not classes_per_task:
            raise LifelongError(f"{benchmark}: --classes-per-task is required for a data file")
        return "text"
    if path.suffix.lower() in IMAGE_DATA_SUFFIXES or path.is_dir():
        if not classes_per_task:
            raise LifelongError(f"{benchmark}: --classes-per-task is required for an image data set")
        return "images"
    raise LifelongError(
        f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)} or give a .jsonl/.csv file, "
        "an .npz of images or a folder of images (one subfolder per class)"
    )


def load_stream(
    benchmark: str,
    seed: int = 0,
    classes_per_task: int | None = None,
    text_field: str = "text",
    label_field: str = "label",
    test_file: str | None = None,
) -> Stream:
    """A registered benchmark name, or a JSONL/CSV file, an .npz of images or an image folder, cut into tasks of
    `classes_per_task` classes."""
    kind = check_benchmark(benchmark, classes_per_task)
    if kind == "name":
        return BENCHMARKS[benchmark][1](seed=seed, classes_per_task=classes_per_task)
    path = Path(benchmark)
    if kind == "text":
        from .files import load_file

        data = load_file(path, text_field=text_field, label_field=label_field, seed=seed, test_path=test_file)
    elif path.is_dir():
        data = images.load_image_folder(path, seed=seed)
    else:
        data = images.load_npz(path, seed=seed)
    return class_incremental(data, classes_per_task=classes_per_task, seed=seed)
