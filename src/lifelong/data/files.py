"""Load the user's own labelled text from a JSONL or CSV file.

Every problem in the file is reported as one `LifelongError` line, `path:line: problem`, so the user can jump
straight to the offending row instead of reading a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from ..errors import LifelongError
from .task import LabelledData, check_splits

SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


def load_file(
    path,
    text_field: str = "text",
    label_field: str = "label",
    split_field: str = "split",
    test_fraction: float = 0.2,
    seed: int = 0,
    test_path=None,
) -> LabelledData:
    """Splits come from the rows' `split` field and/or the separate `test_path` file; only when neither is
    given is a test set held out, stratified per class so every evaluated class has also been trained on."""
    rows = read_rows(path, text_field, label_field, split_field)
    has_split = any(split is not None for *_, split in rows)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for line, text, label, split in rows:
        if has_split and split is None:
            raise LifelongError(f"{path}:{line}: no {split_field!r} value (other rows have one)")
        splits[split or "train"].append((text, label))
    if test_path is not None:
        splits["test"] += [(text, label) for _, text, label, _ in read_rows(test_path, text_field, label_field, None)]
    elif not has_split:
        if not 0 < test_fraction < 1:
            raise LifelongError(f"test_fraction must be between 0 and 1, got {test_fraction}")
        splits["train"], splits["test"] = hold_out(splits["train"], test_fraction, seed)
    if not splits["test"]:
        why = f"no row has {split_field} 'test'" if has_split else "every class has a single example"
        raise LifelongError(f"{path}: no test examples ({why})")
    data = LabelledData(Path(path).stem, splits["train"], splits["test"], splits["val"], source=str(path))
    check_splits(data)
    return data


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


def read_rows(path, text_field, label_field, split_field):
    """(line, text, label, split-or-None) per row, validated."""
    out = []
    for line, row in records(path, text_field, label_field):
        values = []
        for field in (text_field, label_field):
            if row.get(field) is None:
                has = ", ".join(k for k, v in row.items() if k is not None and v is not None)
                raise LifelongError(
                    f"{path}:{line}: missing field {field!r} " + (f"(row has: {has})" if has else "(row is empty)")
                )
            values.append(row[field])
        text, label = values
        if not isinstance(text, str):
            raise LifelongError(f"{path}:{line}: field {text_field!r} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise LifelongError(f"{path}:{line}: empty text in field {text_field!r}")
        if isinstance(label, (dict, list)):
            raise LifelongError(f"{path}:{line}: label must be a string or number, got {type(label).__name__}")
        label = str(label).strip()
        if not label:
            raise LifelongError(f"{path}:{line}: empty label in field {label_field!r}")
        split = row.get(split_field) if split_field else None
        if split is not None and str(split).strip() != "":
            key = str(split).strip().lower()
            if key not in SPLITS:
                raise LifelongError(
                    f"{path}:{line}: unknown {split_field} {split!r} (expected train, val, validation or test)"
                )
            split = SPLITS[key]
        else:
            split = None
        out.append((line, text, label, split))
    if not out:
        raise LifelongError(f"{path}: no rows")
    return out


def records(path, text_field, label_field):
    """(1-based line, dict) pairs; format errors name the line."""
    p = Path(path)
    if not p.is_file():
        raise LifelongError(f"{path}: file not found")
    kind = FORMATS.get(p.suffix.lower())
    if kind is None:
        raise LifelongError(f"{path}: unknown extension {p.suffix!r} (expected .jsonl, .json or .csv)")
    data = p.read_bytes()
    if kind == "jsonl":
        return list(_jsonl_rows(path, data))
    return list(_csv_rows(path, data, (text_field, label_field)))


def _jsonl_rows(path, data: bytes):
    for line, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise LifelongError(f"{path}:{line}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise LifelongError(f"{path}:{line}: invalid JSON ({e.msg} at column {e.colno})")
        if not isinstance(row, dict):
            raise LifelongError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
        yield line, row


def _csv_rows(path, data: bytes, required):
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LifelongError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x})")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = reader.fieldnames
        if not columns:
            return
        for field in required:
            if field not in columns:
                raise LifelongError(
                    f"{path}:1: header has no column {field!r} (columns: {', '.join(columns)})"
                )
        for row in reader:
            yield reader.line_num, row
    except csv.Error as e:
        raise LifelongError(f"{path}:{reader.line_num}: invalid CSV ({e})")
