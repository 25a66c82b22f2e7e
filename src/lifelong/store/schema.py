"""What a model store reads back, checked field by field before any of it is used.

The files are ours, but a disk, a sync tool or a person can change them: a manifest with `versions: null` or a
learner.json that is a list must fail as one line naming the file and the field, not as a `TypeError` deep in a
request. Unknown extra fields are kept (a newer lifelong may add some); known ones must have their type.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, model_validator

from ..errors import LifelongError

Count = Annotated[StrictInt, Field(ge=0)]
Digest = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
Number = StrictFloat | StrictInt
MAX_HEADER = 100_000_000  # bytes of a safetensors header: far more than any model here writes


class _Checked(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Backbone(_Checked):
    name: Annotated[StrictStr, Field(min_length=1)]
    sha256: StrictStr
    max_length: Annotated[StrictInt, Field(ge=1)]


class TaskEntry(_Checked):
    name: StrictStr
    classes: Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=200)]], Field(min_length=1)]
    version: Count


class VersionEntry(_Checked):
    version: Count
    created: StrictStr
    parent: Count | None
    tasks: list[TaskEntry]
    threshold: Number | None
    calibrated: StrictBool | None = None  # False: the threshold was carried over without held-out data
    metrics: dict[str, Any] | None
    files: dict[Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]+$")], Digest]
    bytes: Count
    new_bytes: Count
    adapted: dict[str, Any] | None = None  # test-time adaptation of the backbone: method, settings, images

    @model_validator(mode="after")
    def _finite(self):
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError("threshold must be a finite number")
        return self


class Manifest(_Checked):
    format: StrictInt
    backbone: Backbone
    method: StrictStr
    settings: dict[str, Any]
    current: Count
    versions: Annotated[list[VersionEntry], Field(min_length=1)]

    @model_validator(mode="after")
    def _current_exists(self):
        numbers = [v.version for v in self.versions]
        if len(set(numbers)) != len(numbers):
            raise ValueError("versions: a version number appears twice")
        if self.current not in numbers:
            raise ValueError(f"current: version {self.current} is not in versions")
        return self


class LearnerFile(_Checked):
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    sha256: Digest
    bytes: Count


class LearnerMeta(_Checked):
    """learner.json: the fields every method writes, and those the `adapters` method adds, where present."""
    method: StrictStr
    config: dict[str, Any]
    backbone: StrictStr
    num_classes: Count | None = None
    classes: list[StrictStr] | None = None
    threshold: Number | None = None
    max_length: StrictInt | None = None
    format: StrictInt | None = None
    backbone_sha256: StrictStr | None = None
    offsets: list[Count] | None = None
    files: list[LearnerFile] | None = None
    shared: LearnerFile | None = None


class Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    dtype: StrictStr
    shape: list[Count]
    data_offsets: Annotated[list[Count], Field(min_length=2, max_length=2)]


DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _message(file: Path, e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{file}: field {loc}: {err['msg']}{more}".encode("utf-8", "backslashreplace").decode("utf-8")


def check(model: type[BaseModel], data, file: Path):
    """`data` read from `file`, validated as `model`; one line naming the file and the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise LifelongError(_message(file, e)) from None


def read_json(model: type[BaseModel], file: Path) -> dict:
    """A JSON file, validated; returned as a plain dict (what the callers index)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LifelongError(f"{file}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise LifelongError(f"{file}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    check(model, data, file)
    return data


def check_safetensors(file: Path) -> None:
    """The header of a safetensors file against its own length: every tensor's dtype known, its byte range inside
    the file, of the size its shape says, and the ranges covering the data exactly once."""
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            size = f.seek(0, 2)
            if len(head) < 8:
                raise LifelongError(f"{file}: not a safetensors file (shorter than its header length)")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise LifelongError(f"{file}: safetensors header length {n} does not fit the file ({size} bytes)")
            f.seek(8)
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise LifelongError(f"{file}: cannot read ({e.strerror})") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LifelongError(f"{file}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise LifelongError(f"{file}: safetensors header is not a JSON object")
    data = size - 8 - n
    spans = []
    for name, value in header.items():
        if name == "__metadata__":
            continue
        t = check(Tensor, value, Path(f"{file} (tensor {name!r})"))
        if t.dtype not in DTYPE_BYTES:
            raise LifelongError(f"{file}: tensor {name!r}: unknown dtype {t.dtype!r}")
        start, end = t.data_offsets
        need = math.prod(t.shape) * DTYPE_BYTES[t.dtype]
        if not start <= end <= data or end - start != need:
            raise LifelongError(f"{file}: tensor {name!r}: bytes {start}..{end} do not hold shape {t.shape} "
                                f"{t.dtype} inside {data} data bytes")
        spans.append((start, end))
    at = 0
    for start, end in sorted(spans):
        if start != at:
            raise LifelongError(f"{file}: tensor data overlaps or leaves a gap at byte {at}")
        at = end
    if at != data:
        raise LifelongError(f"{file}: {data - at} bytes after the last tensor")

