"""`--config FILE`: a command's options from a YAML or JSON file, so a run can be written down, reviewed and
rebuilt. Keys are the option names (`classes-per-task` or `classes_per_task`), `settings` is a mapping of method
settings (the `--set` pairs); flags given on the command line win over the file. A run's own `results.json` is
read through its `config` record, so `lifelong run --config runs/x/results.json --out runs/y` runs it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import LifelongError


def read(path: Path) -> dict[str, Any]:
    """The file's mapping of options (a results.json: the run's recorded config)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LifelongError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LifelongError(f"{path}: not valid YAML ({first})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise LifelongError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LifelongError(f"{path}: expected a mapping of option names to values")
    if isinstance(data.get("config"), dict) and "accuracy_matrix" in data:
        return from_results(data)
    return data


def from_results(result: dict) -> dict[str, Any]:
    """The options of the `lifelong run` that wrote this results.json (the device is left to choose again)."""
    config = dict(result["config"])
    config.pop("device", None)
    config.pop("task_classes", None)
    return {k: v for k, v in config.items() if v is not None}


def defaults(path: Path, params) -> dict[str, Any]:
    """The file's options as a click default map over a command's parameters (`params`: click Parameters).
    An unknown key or a value of the wrong shape is one error naming the file and the key."""
    names: dict[str, Any] = {}
    for p in params:
        names[p.name] = p
        for opt in getattr(p, "opts", []):
            names[opt.lstrip("-").replace("-", "_")] = p
    if "set_" in names:
        names["settings"] = names["set_"]
    out: dict[str, Any] = {}
    for key, value in read(path).items():
        param = names.get(str(key).replace("-", "_"))
        if param is None or param.name == "config":
            known = sorted({p.name.rstrip("_") for p in params if p.name != "config"} | ({"settings"} if "set_" in names else set()))
            raise LifelongError(f"{path}: unknown option {key!r} (options: {', '.join(known)})")
        if param.multiple:
            if isinstance(value, dict):
                value = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in value.items()]
            elif isinstance(value, str):
                value = [value]
            elif not isinstance(value, list):
                raise LifelongError(f"{path}: option {key!r}: expected a list or a mapping")
            out[param.name] = [*out.get(param.name, []), *value]
        elif isinstance(value, (dict, list)):
            raise LifelongError(f"{path}: option {key!r}: expected one value, not a {type(value).__name__}")
        else:
            out[param.name] = value
    return out
