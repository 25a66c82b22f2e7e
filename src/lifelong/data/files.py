"""Load the user's own labelled text from a JSONL or CSV file, and the user's own tasks: a field of the rows
(`task_field`) or a JSON file of class lists (`read_tasks`).

Every problem in the file is reported as one `LifelongError` line, `path:line: problem`, so the user can jump
straight to the offending row instead of reading a traceback.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import LifelongError
from .rows import check_label, check_text, hold_out, show
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
    task_field: str | None = None,
) -> LabelledData:
    """Splits come from the rows' `split` field and/or the separate `test_path` file; only when neither is
    given is a test set held out, stratified per class so every evaluated class has also been trained on.
    With `task_field`, every row of `path` names its task there and `data.tasks` holds the tasks (see
    `tasks_by_field`); rows of `test_path` may leave it out, as a shared held-out set often does."""
    rows = read_rows(path, text_field, label_field, split_field, task_field)
    test_rows = []
    has_split = any(split is not None for _, _, _, split, _ in rows)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for line, text, label, split, _ in rows:
        if has_split and split is None:
            raise LifelongError(f"{path}:{line}: no {split_field!r} value (other rows have one)")
        splits[split or "train"].append((text, label))
    if test_path is not None:
        test_rows = read_rows(test_path, text_field, label_field, None, task_field, need_task=False)
        splits["test"] += [(text, label) for _, text, label, _, _ in test_rows]
    elif not has_split:
        if not 0 < test_fraction < 1:
            raise LifelongError(f"test_fraction must be between 0 and 1, got {test_fraction}")
        splits["train"], splits["test"] = hold_out(splits["train"], test_fraction, seed)
    if not splits["test"]:
        why = f"no row has {split_field} 'test'" if has_split else "every class has a single example"
        raise LifelongError(f"{path}: no test examples ({why})")
    data = LabelledData(Path(path).stem, splits["train"], splits["test"], splits["val"], source=str(path))
    check_splits(data)  # first: every class met below has training rows
    if task_field:
        data.tasks = tasks_by_field([(path, r) for r in rows] + [(test_path, r) for r in test_rows], task_field)
    return data


def tasks_by_field(rows, task_field: str) -> dict[str, list[str]]:
    """Task value -> its classes, both in order of first appearance among the train rows (rows without a split
    count as train, so the order does not depend on the seeded hold-out). A class belongs to one task, so every
    row of it, val and test included, must carry the same value. `rows`: (path, read_rows row) pairs."""
    rows = sorted(rows, key=lambda r: r[1][3] not in (None, "train"))  # stable: train rows first, in file order
    first: dict[str, tuple[str, str]] = {}  # class -> (task, where it was first seen)
    tasks: dict[str, list[str]] = {}
    for path, (line, _, label, _, task) in rows:
        if task is None:  # only a separate test file may leave the field out
            continue
        if label not in first:
            first[label] = (task, f"{path}:{line}")
            tasks.setdefault(task, []).append(label)
        elif first[label][0] != task:
            task0, where = first[label]
            raise LifelongError(
                f"{path}:{line}: class {label!r} has {task_field} {task!r} here but {task0!r} at {where} "
                "(a class belongs to one task)"
            )
    return tasks


def read_tasks(path, data: LabelledData | None = None) -> list[list[str]]:
    """The class lists of a `--tasks` JSON file, in arrival order, checked without data; given `data`, also
    against it. A class of the data that no task names is an error too: dropping its rows silently would
    quietly shrink the benchmark."""
    p = Path(path)
    if not p.is_file():
        raise LifelongError(f"{path}: file not found")
    try:
        tasks = json.loads(p.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise LifelongError(f"{path}: invalid UTF-8") from None
    except json.JSONDecodeError as e:
        raise LifelongError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    shape = "expected a JSON list of tasks, each a list of class names"
    if not isinstance(tasks, list) or not tasks:
        raise LifelongError(f"{path}: {shape}, got " + ("an empty list" if tasks == [] else type(tasks).__name__))
    task_of: dict[str, int] = {}
    for i, classes in enumerate(tasks, 1):
        if not isinstance(classes, list):
            raise LifelongError(f"{path}: task {i}: {shape}, got {type(classes).__name__}")
        if not classes:
            raise LifelongError(f"{path}: task {i} is empty")
        for c in classes:
            if not isinstance(c, str):
                raise LifelongError(f"{path}: task {i}: class names must be strings, got {json.dumps(c)} "
                                    f"(write {json.dumps(str(c))})")
            if c in task_of:
                raise LifelongError(f"{path}: class {c!r} is in task {task_of[c]} and task {i}")
            task_of[c] = i
    if data is not None:
        known = data.class_names()
        where = data.source or data.name
        have = set(known)
        for c, i in task_of.items():
            if c not in have:
                raise LifelongError(f"{path}: class {c!r} (task {i}) has no training examples in {where}")
        left = [c for c in known if c not in task_of]
        if left:
            some = ", ".join(map(repr, left[:5])) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            raise LifelongError(f"{path}: no task holds {len(left)} of the {len(known)} classes of {where}: {some}; "
                                "add them to a task or remove their rows")
    return tasks


def _missing(path, line, row, field):
    has = ", ".join(show(k)[1:-1] for k, v in row.items()
                    if k is not None and v is not None and not (isinstance(v, str) and not v.strip()))
    what = f"(row has: {has})" if has else "(row is empty)"
    return LifelongError(f"{path}:{line}: missing field {field!r} {what}")


def read_rows(path, text_field, label_field, split_field, task_field=None, need_task=True):
    """(line, text, label, split-or-None, task-or-None) per row, validated. With `task_field`, a row without a
    value there (absent, null or empty) is an error unless not `need_task`."""
    out = []
    required = (text_field, label_field) + ((task_field,) if task_field and need_task else ())
    for line, row in records(path, *required):
        values = []
        for field in (text_field, label_field):
            if row.get(field) is None:
                raise _missing(path, line, row, field)
            values.append(row[field])
        text, label = values
        where = f"{path}:{line}"
        text = check_text(text, where, text_field)
        label = check_label(label, where, label_field)
        split = row.get(split_field) if split_field else None
        if split is not None and not (isinstance(split, str) and not split.strip()):
            key = split.strip().lower() if isinstance(split, str) else None
            if key not in SPLITS:
                raise LifelongError(
                    f"{path}:{line}: unknown {split_field} {show(split)} (expected train, val, validation or test)"
                )
            split = SPLITS[key]
        else:
            split = None
        task = row.get(task_field) if task_field else None
        if isinstance(task, str) and not task.strip():
            task = None
        task = None if task is None else check_label(task, f"{path}:{line}", task_field)
        if task is None and task_field and need_task:
            raise _missing(path, line, row, task_field)
        out.append((line, text, label, split, task))
    if not out:
        raise LifelongError(f"{path}: no rows")
    return out


def records(path, *required):
    """(1-based line, dict) pairs; format errors name the line (a CSV header without a `required` column, line 1)."""
    p = Path(path)
    if not p.is_file():
        raise LifelongError(f"{path}: file not found")
    kind = FORMATS.get(p.suffix.lower())
    if kind is None:
        raise LifelongError(f"{path}: unknown extension {p.suffix!r} (expected .jsonl, .json or .csv)")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise LifelongError(f"{path}: cannot read ({e.strerror})") from None
    if kind == "jsonl":
        return list(_jsonl_rows(path, data))
    return list(_csv_rows(path, data, required))


def _jsonl_rows(path, data: bytes):
    for line, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise LifelongError(f"{path}:{line}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
        if not text.strip():
            continue
        try:
            row = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise LifelongError(f"{path}:{line}: invalid JSON ({e.msg} at column {e.colno})") from None
        except _Refused as e:
            raise LifelongError(f"{path}:{line}: {e}") from None
        except ValueError:  # an integer of thousands of digits
            raise LifelongError(f"{path}:{line}: a number too long to read") from None
        except RecursionError:
            raise LifelongError(f"{path}:{line}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise LifelongError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
        yield line, row


class _Refused(ValueError):
    pass


def _no_duplicates(pairs):
    """JSON objects keep the last of two equal keys; a row with two labels is a mistake, not a choice."""
    row = {}
    for k, v in pairs:
        if k in row:
            raise _Refused(f"field {show(k)} appears twice")
        row[k] = v
    return row


def _no_constant(name):
    raise _Refused(f"{name} is not a JSON value")


def _csv_rows(path, data: bytes, required):
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LifelongError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x})")
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = reader.fieldnames
        if not columns:
            if text.strip():
                raise LifelongError(f"{path}:1: blank line before the header (the first line must name the columns)")
            return
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise LifelongError(f"{path}:1: header has column {show(repeated[0])} more than once")
        for field in required:
            if field not in columns:
                raise LifelongError(
                    f"{path}:1: header has no column {field!r} (columns: {', '.join(columns)})"
                )
        for row in reader:
            yield reader.line_num, row
    except csv.Error as e:
        why = "a quoted field is never closed" if "unexpected end of data" in str(e) else str(e)
        raise LifelongError(f"{path}:{reader.line_num}: invalid CSV ({why})") from None
