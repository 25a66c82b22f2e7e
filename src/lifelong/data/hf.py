"""Turn a Hugging Face `datasets.DatasetDict` into `LabelledData`.

`datasets` is an optional dependency, so nothing here imports it: a split only has to offer `column_names`,
`ds[column]` and (optionally) `features[column]` with a ClassLabel-like `.names`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import LifelongError
from .rows import check_label, check_text
from .task import LabelledData, check_splits

SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def from_hf_dataset(ds, text_field: str = "text", label_field: str = "label", name: str = "hf") -> LabelledData:
    """Splits other than train / validation (or val) / test, e.g. 'unsupervised', are ignored."""
    if not isinstance(ds, Mapping):
        raise LifelongError(
            f"{name}: expected a DatasetDict or a mapping of split name -> Dataset, got {type(ds).__name__}"
        )
    out: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for split, key in SPLITS.items():
        if split in ds:
            out[key] += _pairs(ds[split], split, text_field, label_field, name)
    for split in ("train", "test"):
        if split not in ds:
            raise LifelongError(f"{name}: no {split!r} split (splits: {', '.join(map(str, ds)) or 'none'})")
        if not out[split]:
            raise LifelongError(f"{name}: split {split!r} has no rows")
    data = LabelledData(name, out["train"], out["test"], out["val"], source=name)
    check_splits(data)
    return data


def _pairs(d, split, text_field, label_field, name):
    columns = list(getattr(d, "column_names", None) or [])
    for field in (text_field, label_field):
        if field not in columns:
            raise LifelongError(
                f"{name}: split {split!r} has no column {field!r} (columns: {', '.join(columns) or 'none'})"
            )
    feature = (getattr(d, "features", None) or {}).get(label_field)
    names = getattr(feature, "names", None)  # a ClassLabel stores ids; users think in names
    pairs = []
    for i, (text, label) in enumerate(zip(d[text_field], d[label_field])):
        where = f"{name}: split {split!r} row {i}"
        text = check_text(text, where, text_field)
        if names is not None:
            if not isinstance(label, int) or not 0 <= label < len(names):
                # e.g. GLUE test splits, which carry -1 because their labels are hidden
                raise LifelongError(
                    f"{name}: split {split!r} row {i}: label {label!r} is not a class id (0..{len(names) - 1})"
                )
            label = names[label]
        pairs.append((text, check_label(label, where, label_field)))
    return pairs
