"""The one check every text and label passes before a loader, `learn`, the server or `predict` accepts it.

A label becomes a class name that is written into the manifest, printed by `info` and sent back in every answer,
so anything that cannot be written (a lone surrogate), read back the same (`True`, `nan`, `1.0` beside `1`), or
shown on one line (control characters, a megabyte) is refused here, with the place it came from, rather than
learned into a model that then fails on every request that mentions it.
"""

from __future__ import annotations

import math
import random
import unicodedata

from ..errors import LifelongError

MAX_TEXT_CHARS = 20_000  # far past any encoder's token limit: longer is a wrong field, not a long query
MAX_LABEL_CHARS = 200
MAX_LABEL_INT = 10**18
RESERVED = ("out_of_scope",)  # what a model answers for a rejected query: a class of that name would be ambiguous


def _blank(ch: str) -> bool:
    """Whitespace, and the invisible format characters (zero-width space, joiner, BOM) a text can consist of."""
    return ch.isspace() or unicodedata.category(ch) in ("Cf", "Cc", "Zs", "Zl", "Zp")


def _encodable(value: str) -> int | None:
    """Index of the first lone surrogate (text that was never valid Unicode), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def show(value, limit: int = 40) -> str:
    """A value for an error message: shortened, and escaped so that the message itself can always be printed."""
    text = repr(value if not isinstance(value, str) or len(value) <= limit else value[:limit] + "...")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_text(value, where: str, field: str = "text", limit: int = MAX_TEXT_CHARS) -> str:
    """`value` if it is a usable text; `where` names its place ("file:line") in the error."""
    if not isinstance(value, str):
        raise LifelongError(f"{where}: field {field!r} must be a string, got {_kind(value)}")
    bad = _encodable(value)
    if bad is not None:
        raise LifelongError(f"{where}: field {field!r} is not valid Unicode (lone surrogate at character {bad + 1})")
    if all(_blank(ch) for ch in value):
        raise LifelongError(f"{where}: empty text in field {field!r}" + (" (only invisible characters)" if value.strip() else ""))
    if len(value) > limit:
        raise LifelongError(f"{where}: text in field {field!r} has {len(value):,} characters (limit {limit:,})")
    return value


def check_label(value, where: str, field: str = "label", reserved: tuple[str, ...] = RESERVED) -> str:
    """A class name from a string or an integer; anything else (floats, booleans, nulls, objects) is refused, since
    `1.0`, `True` or `NaN` would silently become classes that no one wrote."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        hint = f" (write it as a string: \"{value}\")" if isinstance(value, float) and math.isfinite(value) else ""
        raise LifelongError(f"{where}: {field!r} must be a string or an integer, got {_kind(value)}{hint}")
    if isinstance(value, int):
        if abs(value) > MAX_LABEL_INT:
            raise LifelongError(f"{where}: {field!r} is an integer too large for a class name (limit 10^18)")
        value = str(value)
    bad = _encodable(value)
    if bad is not None:
        raise LifelongError(f"{where}: {field!r} is not valid Unicode (lone surrogate at character {bad + 1})")
    label = value.strip()
    if not label:
        raise LifelongError(f"{where}: empty label in field {field!r}")
    if len(label) > MAX_LABEL_CHARS:
        raise LifelongError(f"{where}: {field!r} has {len(label):,} characters (limit {MAX_LABEL_CHARS})")
    if not label.isprintable():
        ch = next(c for c in label if not c.isprintable())
        raise LifelongError(f"{where}: {field!r} {show(label)} holds an unprintable character (U+{ord(ch):04X})")
    if label in reserved:
        raise LifelongError(f"{where}: {field!r} cannot be {label!r} (reserved for rejected queries)")
    return label


def check_rows(rows, source: str, oos_label: str | None = None, allow_oos: bool = False) -> list[tuple[str, str]]:
    """(text, label) pairs handed to the store directly (the server, the library): each checked, named by its
    position. `oos_label` rows are refused unless `allow_oos` (held-out rows may be out of scope)."""
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, (tuple, list)) or len(row) != 2:
            raise LifelongError(f"{source}: row {i}: expected a (text, label) pair, got {_kind(row)}")
        where = f"{source}: row {i}"
        text, label = check_text(row[0], where), check_label(row[1], where)
        if label == oos_label and not allow_oos:
            raise LifelongError(f"{where}: training rows cannot be labelled {oos_label!r} (out of scope)")
        out.append((text, label))
    return out


def _kind(value) -> str:
    if isinstance(value, float):
        return f"number {show(value)}"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    return "null" if value is None else type(value).__name__


def hold_out(rows, fraction, seed):
    """Per class, so rare classes still get tested; a class with one example has to stay in train."""
    by_label: dict[str, list[int]] = {}
    for i, (_, label) in enumerate(rows):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(seed)
    test: set[int] = set()
    for label in sorted(by_label):
        index = by_label[label]
        if len(index) < 2:
            continue
        k = min(max(1, round(fraction * len(index))), len(index) - 1)
        test.update(rng.sample(index, k))
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]
