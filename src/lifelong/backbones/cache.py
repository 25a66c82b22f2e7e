"""Frozen features computed once per input and backbone, in memory and optionally on disk.

Frozen-backbone methods call the cache instead of the encoder, so a 10-task run embeds each example once;
the disk copy (safetensors, keyed by the backbone's weights hash) makes later runs skip embedding altogether.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import distributed
from ..io import atomic_write

log = logging.getLogger(__name__)


def input_key(x) -> str:
    """The cache's key of one input: its text, or its tensor's bytes, digested."""
    data = x.encode("utf-8") if isinstance(x, str) else x.numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:20]


def missing_keys(keys: Sequence[str], held) -> list[str]:
    """The distinct keys to embed now, in order of first appearance: those not `held`, and with several processes
    those any rank lacks. Why any rank: evaluation scores each rank's own share of the test inputs
    (`distributed.alone`), so the caches of different ranks may differ by those rows; a shared pass must still be
    the same call on every rank, and it rewrites the rows some rank held so that every rank holds the same values."""
    unique = list(dict.fromkeys(keys))
    if distributed.world() == 1:
        return [k for k in unique if k not in held]
    need = distributed.any_rank(torch.tensor([k not in held for k in unique], dtype=torch.bool))
    return [k for k, m in zip(unique, need.tolist()) if m]


class FeatureCache:
    def __init__(self, encoder, directory: str | Path | None = None, progress: bool = True):
        self.encoder, self.progress = encoder, progress
        self.rows: dict[str, int] = {}
        self.table = torch.empty(0, encoder.dim)
        self.path = None
        self._dirty = False
        if directory:
            # what else changes the features: the token limit, and a frozen pass in bf16 (devices.frozen_dtype)
            dtype = getattr(encoder, "frozen_dtype", None)
            what = f"{encoder.weights_hash()}:{encoder.max_length}" + (f":{dtype}" if dtype is not None else "")
            tag = hashlib.sha1(what.encode()).hexdigest()[:16]
            self.path = Path(directory) / f"features-{tag}.safetensors"
            self._load()

    def _lock(self) -> FileLock:
        """Held while the two files are read or written: runs sharing a cache directory (`bench --jobs`) neither
        read keys of one write with features of another nor drop each other's new rows."""
        return FileLock(str(self.path.with_suffix(".lock")))

    def _read(self) -> tuple[list[str], torch.Tensor] | None:
        if not self.path.exists():
            return None
        try:
            tensors = load_file(self.path)
            keys = json.loads(self.path.with_suffix(".json").read_text())
            if len(keys) != len(tensors["features"]):
                raise ValueError("key count mismatch")
        except (OSError, ValueError, SafetensorError, KeyError) as e:
            log.warning("ignoring unreadable feature cache %s (%s)", self.path, e)
            return None
        return keys, tensors["features"]

    def _load(self) -> None:
        with self._lock():
            disk = self._read()
        if disk is not None:
            keys, self.table = disk
            self.rows = {k: i for i, k in enumerate(keys)}

    def __call__(self, inputs: Sequence) -> torch.Tensor:
        keys = [input_key(x) for x in inputs]
        missing = missing_keys(keys, self.rows)
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            new_inputs = [inputs[first[k]] for k in missing]
            if isinstance(inputs, torch.Tensor):
                new_inputs = torch.stack(new_inputs)
            feats = self._encode(new_inputs)
            known = [i for i, k in enumerate(missing) if k in self.rows]  # another rank lacked them (see missing_keys)
            if known:
                self.table[torch.tensor([self.rows[missing[i]] for i in known])] = feats[known]
            new = [i for i, k in enumerate(missing) if k not in self.rows]
            start = len(self.table)
            self.table = torch.cat([self.table, feats[new]])
            self.rows.update({missing[i]: start + j for j, i in enumerate(new)})
            self._dirty = True
        return self.table[torch.tensor([self.rows[k] for k in keys], dtype=torch.long)]

    def _encode(self, inputs) -> torch.Tensor:
        """The frozen pass; with several processes (torchrun) each embeds its share and all receive every row."""
        start, stop = distributed.share(len(inputs))
        part = (self.encoder.encode(inputs[start:stop], progress=self.progress and stop - start > 256)
                if stop > start else torch.empty(0, self.encoder.dim))
        return distributed.gather_rows(part, len(inputs))

    def export(self, inputs: Sequence) -> tuple[list[str], torch.Tensor]:
        """(keys, features) of those inputs already embedded: what a model store keeps for the next learn."""
        keys = [k for k in dict.fromkeys(input_key(x) for x in inputs) if k in self.rows]
        return keys, self.table[torch.tensor([self.rows[k] for k in keys], dtype=torch.long)]

    def add(self, keys: list[str], feats: torch.Tensor) -> None:
        """Features computed earlier (`export`) for keys not held yet; rows of another width are ignored."""
        new = [i for i, k in enumerate(keys) if k not in self.rows]
        if not new or feats.ndim != 2 or feats.shape[1] != self.table.shape[1] or len(feats) != len(keys):
            return
        start = len(self.table)
        self.table = torch.cat([self.table, feats[new].to(self.table.dtype)])
        self.rows.update({keys[i]: start + j for j, i in enumerate(new)})

    def clear(self) -> None:
        """Drop the in-memory table (the disk copy, if any, stays)."""
        self.rows, self.table, self._dirty = {}, torch.empty(0, self.encoder.dim), False

    def save(self) -> None:
        if not (self.path and self._dirty):
            return
        with self._lock():
            keys = sorted(self.rows, key=self.rows.get)
            table = self.table
            disk = self._read()  # rows another run added since this one loaded
            if disk is not None:
                theirs = [i for i, k in enumerate(disk[0]) if k not in self.rows]
                keys += [disk[0][i] for i in theirs]
                table = torch.cat([table, disk[1][theirs]])
            atomic_write(self.path.with_suffix(".json"), lambda p: p.write_text(json.dumps(keys)))
            atomic_write(self.path, lambda p: save_file({"features": table.contiguous()}, str(p)))
        self._dirty = False
