"""Benchmarks by name (or a user file or image folder) -> a `Stream`. New benchmarks register one builder here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import LifelongError
from . import clinc150, files, images, wordnet
from .task import Stream, class_incremental

BENCHMARKS: dict[str, tuple[str, Callable[..., Stream]]] = {
    "clinc150": ("CLINC150 intents, 10 tasks (one per domain, 15 intents each)", lambda **kw: clinc150.stream()),
    "clinc150:random": ("CLINC150 intents shuffled by --seed into 10 tasks of 15 (related intents in different tasks)",
                        lambda seed=0, **kw: clinc150.stream(split="random", seed=seed)),
    "fashion-mnist": ("Split Fashion-MNIST images, 5 tasks of 2 classes (500 train + 100 test per class, 64 px)",
                      images.fashion_mnist_stream),
    "wordnet": ("WordNet noun supersenses from glosses, 5 tasks of 4 (300 train + 100 test per class)",
                wordnet.stream),
}

FILE_SUFFIXES = tuple(files.FORMATS)  # the file readers' own list
IMAGE_DATA_SUFFIXES = (".npz",)


def check_benchmark(benchmark: str, classes_per_task: int | None = None, task_field: str | None = None,
                    tasks_file: str | None = None) -> str:
    """What `benchmark` names, without loading it: "name" (registered), "text" (a data file) or "images" (an .npz
    or a folder); a LifelongError for anything else. A file's tasks need exactly one definition: a data file
    `classes_per_task`, `task_field` or `tasks_file`, an image set `classes_per_task` or `tasks_file` (read and
    checked here, so a bad one fails before anything runs); a registered benchmark defines its own."""
    if benchmark in BENCHMARKS:
        if task_field or tasks_file:
            raise LifelongError(f"{benchmark}: --task-field and --tasks are for data files; "
                                "a registered benchmark defines its own tasks")
        return "name"
    path = Path(benchmark)
    if path.suffix.lower() in FILE_SUFFIXES:
        kind, what = "text", "a data file"
        ways = {"--classes-per-task": classes_per_task, "--task-field": task_field, "--tasks": tasks_file}
    elif path.suffix.lower() in IMAGE_DATA_SUFFIXES or path.is_dir():
        if task_field:
            raise LifelongError(f"{benchmark}: --task-field is for JSONL/CSV data files; "
                                "give an image data set --classes-per-task or --tasks FILE")
        kind, what = "images", "an image data set"
        ways = {"--classes-per-task": classes_per_task, "--tasks": tasks_file}
    else:
        raise LifelongError(
            f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)} or give a .jsonl/.csv file, "
            "an .npz of images or a folder of images (one subfolder per class)"
        )
    given = [flag for flag, value in ways.items() if value not in (None, "")]
    if len(given) != 1:
        flags = ", ".join(list(ways)[:-1]) + f" or {list(ways)[-1]}"
        raise LifelongError(f"{benchmark}: {what} needs exactly one of {flags} to define its tasks "
                            + (f"(got {' and '.join(given)})" if given else "(got none)"))
    if classes_per_task is not None and classes_per_task < 1:
        raise LifelongError(f"--classes-per-task must be a positive integer, got {classes_per_task}")
    if tasks_file:
        files.read_tasks(tasks_file)
    return kind


def load_stream(
    benchmark: str,
    seed: int = 0,
    classes_per_task: int | None = None,
    text_field: str = "text",
    label_field: str = "label",
    test_file: str | None = None,
    task_field: str | None = None,
    tasks_file: str | None = None,
) -> Stream:
    """A registered benchmark name, or a JSONL/CSV file, an .npz of images or an image folder, cut into tasks:
    `classes_per_task` classes in seeded order, the rows' `task_field` (tasks named by its values) or the class
    lists of `tasks_file`."""
    kind = check_benchmark(benchmark, classes_per_task, task_field, tasks_file)
    if kind == "name":
        return BENCHMARKS[benchmark][1](seed=seed, classes_per_task=classes_per_task)
    path = Path(benchmark)
    if kind == "text":
        data = files.load_file(path, text_field=text_field, label_field=label_field, seed=seed, test_path=test_file,
                               task_field=task_field)
    elif path.is_dir():
        data = images.load_image_folder(path, seed=seed)
    else:
        data = images.load_npz(path, seed=seed)
    if tasks_file:
        return class_incremental(data, groups=files.read_tasks(tasks_file, data))
    if task_field:
        return class_incremental(data, groups=list(data.tasks.values()), task_names=list(data.tasks))
    return class_incremental(data, classes_per_task=classes_per_task, seed=seed)
