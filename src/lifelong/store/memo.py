"""What a version computed on its held-out rows, kept beside the versions for the next `learn` or `calibrate`.

Why: `learn --eval FILE` scores every held-out row after each task, and such a file grows with the tasks (every
learned class's rows). Most of that work is the same as last time: the frozen pass of a row, an `adapters` model's
class feature of it, and its finished tasks' head outputs never change. So after scoring, the store keeps those
per-row results (`Learner.memo_state`) for the version it wrote, and the next learn from that version starts from
them: it embeds only rows it has not seen, and runs only the adapters the new task adds or a row is newly routed to.

A cache, not part of any version: MODEL/cache/vNNNN.safetensors (rows as tensors, their input keys in the header),
only the newest kept. It is read only for the version that wrote it, on the same backbone weights and frozen-pass
dtype; anything else, or an unreadable file, is ignored and recomputed. Deleting it costs time; the results agree
with the cached ones up to float rounding (a row's features can differ in the last bits with its batch).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..devices import frozen_pass_name
from ..io import atomic_write

log = logging.getLogger(__name__)

CACHE = "cache"


def path(store: Path, version: int) -> Path:
    return Path(store) / CACHE / f"v{version:04d}.safetensors"


def _stamp(learner) -> dict[str, str]:
    """What the rows depend on beside the version: the backbone's weights and the frozen pass's dtype."""
    return {"backbone_sha256": learner.backbone.weights_hash(), "frozen_pass": frozen_pass_name(learner.backbone)}


def load(store: Path, version: int, learner) -> None:
    """Give `learner` (loaded from `version`) the rows that version kept."""
    file = path(store, version)
    if not file.is_file():
        return
    try:
        with safe_open(str(file), "pt") as f:
            header = f.metadata() or {}
            if any(header.get(k) != v for k, v in _stamp(learner).items()):
                return
            memo = {tag: (json.loads(header[f"keys.{tag}"]), f.get_tensor(tag)) for tag in f.keys()}
    except (OSError, SafetensorError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable cache %s (%s)", file, e)
        return
    learner.load_memo(memo)
    log.info("reusing results on %d held-out rows from %s", max(len(keys) for keys, _ in memo.values()), file)


def save(store: Path, version: int, learner, inputs) -> None:
    """Keep what `learner` computed on `inputs` for `version`, replacing older caches. A failure (disk full) is a
    warning: the version is published already, and a missing cache costs only time."""
    memo = learner.memo_state(inputs)
    if not memo:
        return
    file = path(store, version)
    header = {**_stamp(learner), **{f"keys.{tag}": json.dumps(keys) for tag, (keys, _) in memo.items()}}
    try:
        file.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write(file, lambda p: save_file({tag: rows.contiguous() for tag, (_, rows) in memo.items()}, str(p),
                                               metadata=header), mode=0o600)
        for old in file.parent.glob("v*.safetensors"):
            if old != file:
                old.unlink(missing_ok=True)
    except (OSError, SafetensorError) as e:
        log.warning("could not keep the held-out cache %s (%s); the next learn recomputes it", file, e)
