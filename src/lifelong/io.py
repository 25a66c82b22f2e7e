"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], mode: int = 0o644) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, fsync it, rename it over `path`, then fsync the
    folder: until the folder's entry is on disk, a power cut can bring back the old file after the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, mode)  # mkstemp makes it owner-only; results are meant to be shared (a model is not)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"), mode)


def write_json(path: str | os.PathLike, obj, mode: int = 0o644) -> Path:
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n", mode)


def atomic_dir(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Build a directory in a temporary sibling, then swap it in; an interrupted write leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def crash_point(name: str) -> None:
    """Fault injection for the durability tests: LIFELONG_CRASH_AT=name kills this process here (SIGKILL)."""
    if os.environ.get("LIFELONG_CRASH_AT") == name:
        os.kill(os.getpid(), 9)
