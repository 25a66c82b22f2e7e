"""lifelong: continual learning on frozen pretrained models, measured with the field's protocol.

    import lifelong
    model = lifelong.load("runs/demo")          # a run, a saved learner or a model store
    model.predict("what is my balance")         # -> 'balance'
    model.predict(["book a flight", "hi"])      # -> a label per text
    model.scores(texts), model.classes_         # scores [n, classes] and the column names

    store = lifelong.ModelStore("my-model")     # the versioned store: learn / load / rollback
    lifelong.Experiment(benchmark="clinc150", method="adapters").run(Path("runs/x"))   # `lifelong run`

The names below load on first use, so `import lifelong` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load": "api",
    "Model": "model",
    "ModelStore": "store",
    "Experiment": "experiment",
    "Learner": "methods",
    "METHODS": "methods",
    "LifelongError": "errors",
    "Task": "data.task",
    "Stream": "data.task",
    "Examples": "data.task",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .api import load
    from .data.task import Examples, Stream, Task
    from .errors import LifelongError
    from .experiment import Experiment
    from .methods import METHODS, Learner
    from .model import Model
    from .store import ModelStore


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lifelong' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
