"""Progress of slow loops: a bar on a terminal; a log line every 30 s and one at the end when the output goes
to a file (a redirected bar writes hundreds of frames and no line a log reader can use); nothing when quiet
(`--quiet`, or TQDM_DISABLE=1)."""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger("lifelong")
EVERY = 30.0  # seconds between log lines off a terminal


def _quiet() -> bool:
    """Asked for by the CLI's --quiet (LIFELONG_LOG_LEVEL, which `bench` cells inherit) or by TQDM_DISABLE; not
    inferred from logging, whose default level would hide the bars of anyone using the library from Python."""
    level = os.environ.get("LIFELONG_LOG_LEVEL", "").upper()
    return (level in ("WARNING", "ERROR", "CRITICAL")
            or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"))


class Progress:
    def __init__(self, total: int, desc: str, unit: str, enabled: bool = True):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.start = self.last = time.monotonic()
        on = enabled and not _quiet()
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False) if on and sys.stderr.isatty() else None
        self.lines = on and self.bar is None
        self.postfix: dict = {}

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        self.postfix = postfix
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
        elif self.lines and time.monotonic() - self.last >= EVERY:
            self.last = time.monotonic()
            log.info("%s: %d/%d %s%s", self.desc, self.n, self.total, self.unit, self._extra())

    def _extra(self) -> str:
        return "".join(f", {k} {v}" for k, v in self.postfix.items())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines:
            log.info("%s: %d %s in %.1fs%s", self.desc, self.n, self.unit, time.monotonic() - self.start,
                     self._extra())
