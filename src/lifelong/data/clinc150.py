"""CLINC150 (Larson et al., EMNLP 2019): 150 intents in 10 domains, the conventional 10-task stream.

The data is located at run time, never copied into the repo: `$LIFELONG_DATA/clinc150`, else
`../shared/data/clinc150` beside the repository (or the working directory), else downloaded once from the
dataset's public release into `~/.cache/lifelong/clinc150` and checked against pinned SHA-256 digests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import urllib.request
from pathlib import Path

from ..errors import LifelongError
from .task import LabelledData, Stream, class_incremental

RELEASE = "https://raw.githubusercontent.com/clinc/oos-eval/master/data/"
SHA256 = {
    "data_full.json": "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0",
    "domains.json": "b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a",
}
OOS = "oos"


def _candidates() -> list[Path]:
    out = []
    if os.environ.get("LIFELONG_DATA"):
        out.append(Path(os.environ["LIFELONG_DATA"]) / "clinc150")
    repo = Path(__file__).resolve().parents[3]  # src/lifelong/data/ -> repo root (editable install)
    out += [repo.parent / "shared/data/clinc150", Path.cwd().parent / "shared/data/clinc150"]
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in SHA256.items():
        target = dest / name
        if target.exists() and _sha256(target) == digest:
            continue
        tmp = target.with_suffix(".part")
        try:
            urllib.request.urlretrieve(RELEASE + name, tmp)
        except OSError as e:
            raise LifelongError(
                f"CLINC150 not found locally and download of {RELEASE + name} failed ({e}); "
                "set LIFELONG_DATA to a folder containing clinc150/data_full.json"
            ) from None
        if _sha256(tmp) != digest:
            tmp.unlink()
            raise LifelongError(f"downloaded {name} does not match its pinned SHA-256; refusing to use it")
        os.replace(tmp, target)
    return dest


def locate(download: bool = True) -> Path:
    for c in _candidates():
        if (c / "data_full.json").is_file() and (c / "domains.json").is_file():
            return c
    if not download:
        raise LifelongError("CLINC150 not found; set LIFELONG_DATA to a folder containing clinc150/")
    return _download(Path.home() / ".cache/lifelong/clinc150")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LifelongError(f"{path}: cannot read CLINC150 file ({e})") from None


def load(root: Path | None = None) -> tuple[LabelledData, dict[str, list[str]], dict[str, list[str]]]:
    """In-scope data, the domains (key order = task order) and the out-of-scope texts per split."""
    root = Path(root) if root else locate()
    full = _read_json(root / "data_full.json")
    domains = _read_json(root / "domains.json")

    def rows(split):
        return [(text, intent) for text, intent in full[split]]

    data = LabelledData("clinc150", rows("train"), rows("test"), rows("val"), source=str(root / "data_full.json"))
    oos = {s: [t for t, _ in full.get(f"oos_{s}", [])] for s in ("train", "val", "test")}
    return data, domains, oos


def stream(root: Path | None = None, split: str = "domain", seed: int = 0) -> Stream:
    """10 class-incremental tasks of 15 intents, with the out-of-scope queries of val (100) and test (1,000) for
    the rejection protocol. `split="domain"`: one task per domain in `domains.json` key order (routing is easy:
    tasks are unrelated). `split="random"`: the 150 intents shuffled by `seed` into 10 tasks of 15, so related
    intents of one domain arrive in different tasks, as new classes do in real use."""
    data, domains, oos = load(root)
    if split == "domain":
        s = class_incremental(data, groups=list(domains.values()), task_names=list(domains))
    elif split == "random":
        s = dataclasses.replace(class_incremental(data, classes_per_task=15, seed=seed), name="clinc150:random")
    else:
        raise LifelongError(f"unknown CLINC150 split {split!r}; choose domain or random")
    return dataclasses.replace(s, oos={"val": oos["val"], "test": oos["test"]})
