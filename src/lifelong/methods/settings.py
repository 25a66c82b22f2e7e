"""Types for method settings: a config dataclass field annotated with one of these is checked (type, range,
choice) by pydantic before anything runs, whether the value comes from `--set`, a config file or learner.json.

    epochs: Positive = 6        an int >= 1
    blocks: Count = 2           an int >= 0 (0 means "all" or "none", as the field says)
    lr: PositiveFloat = 3e-3    a float > 0
    restore: Probability = 0.01 a float in [0, 1]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from ..adapters.quant import PRECISIONS
from ..errors import LifelongError

Positive = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
AdapterKind = Annotated[str, AfterValidator(lambda kind: _known_kind(kind))]  # registered in adapters/site.py
Precision = Literal[PRECISIONS]


def _known_kind(kind: str) -> str:
    from ..adapters.site import KINDS

    if kind not in KINDS:
        raise ValueError(f"unknown adapter {kind!r}; choose one of {', '.join(sorted(KINDS))}")
    return kind


@functools.cache
def _adapter(config_cls: type) -> TypeAdapter:
    return TypeAdapter(config_cls)


def config_from_dict(config_cls: type, values: dict[str, Any]):
    """A method's config from strings (`--set`), or JSON values (config files, learner.json), checked field by
    field: an unknown name, a value of the wrong type ("flase" for a bool), out of range or not among the choices
    is one error naming the setting."""
    fields = [f.name for f in dataclasses.fields(config_cls)]
    for key in values:
        if key not in fields:
            raise LifelongError(f"unknown setting {key!r} for this method (settings: {', '.join(fields) or 'none'})")
    try:
        return _adapter(config_cls).validate_python(dict(values))
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "?"
        raise LifelongError(f"setting {key!r}: {err['msg'][0].lower()}{err['msg'][1:]} "
                            f"(got {err.get('input')!r})") from None


def settings(config_cls: type) -> dict[str, Any]:
    return {f.name: getattr(config_cls(), f.name) for f in dataclasses.fields(config_cls)}
