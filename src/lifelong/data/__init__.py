"""Sources of labelled data and the builders that cut them into task streams."""

from .benchmarks import BENCHMARKS, load_stream
from .task import (
    Examples,
    LabelledData,
    Stream,
    Task,
    class_incremental,
    domain_incremental,
)

__all__ = [
    "BENCHMARKS",
    "Examples",
    "LabelledData",
    "Stream",
    "Task",
    "class_incremental",
    "domain_incremental",
    "load_stream",
]
