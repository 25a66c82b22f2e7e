"""`lifelong.load(path)`: one entry point for every kind of saved model.

    a model store (manifest.json)        its current version, or `version=`
    a finished `lifelong run` (results.json, model/)   the run's final model, class names and threshold
    a saved learner (learner.json)       what `Model.save` or `Learner.save` wrote
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import LifelongError
from .model import Model


def load(path: str | os.PathLike, version: int | None = None, device: str = "auto",
         backbone: str | None = None) -> Model:
    """The model at `path`, ready to `predict`. `device`: where the backbone runs (auto, cpu, cuda, mps).
    `backbone`: a local path or id to load the encoder from instead of the name the model records (same
    weights, checked where the model keeps their hash)."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        from .store import ModelStore

        model = ModelStore(path, device).load(version)
        model.source = str(path)
        return model
    if version is not None:
        raise LifelongError(f"{path}: not a model store; `version` applies to store directories only")
    if (path / "results.json").is_file():
        return _load_run(path, device, backbone)
    if (path / "learner.json").is_file():
        meta = _read_json(path / "learner.json")
        learner = _load_learner(path, meta, backbone or meta.get("backbone"), meta.get("max_length") or 128, device)
        if not learner.class_names and learner.num_classes:
            learner.class_names = [str(i) for i in range(learner.num_classes)]  # saved before names were kept
        return Model(learner, learner.class_names, meta.get("threshold"), source=str(path))
    raise LifelongError(f"{path}: not a lifelong model (no manifest.json, results.json or learner.json)")


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LifelongError(f"{file}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(data, dict):
        raise LifelongError(f"{file}: not a JSON object")
    return data


def _load_learner(folder: Path, meta: dict, backbone: str | None, max_length: int, device: str):
    from .backbones import load_backbone
    from .methods import Learner

    if not backbone:
        raise LifelongError(f"{folder / 'learner.json'}: names no backbone")
    encoder = load_backbone(backbone, max_length=max_length, device=device)
    return Learner.load(folder, encoder)


def _load_run(run: Path, device: str, backbone: str | None) -> Model:
    result = _read_json(run / "results.json")
    config = result.get("config")
    if not isinstance(config, dict):
        raise LifelongError(f"{run / 'results.json'}: not the results of a `lifelong run` (no config)")
    if not (run / "model" / "learner.json").is_file():
        raise LifelongError(f"{run}: the run saved no model (it ran with --no-save)")
    meta = _read_json(run / "model" / "learner.json")
    learner = _load_learner(run / "model", meta, backbone or config.get("backbone") or meta.get("backbone"),
                            config.get("max_length", 128), device)
    classes = [c for task in config.get("task_classes", []) for c in task] or learner.class_names
    rejection = result.get("out_of_scope") or {}
    return Model(learner, classes, rejection.get("threshold"), source=str(run))
