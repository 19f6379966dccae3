"""Plain JSON values from frozen dataclasses and back, strictly (the manifest's encoding).

``to_jsonable`` leaves out a field marked ``omit_default`` (``flsilo.plans.plan.OMIT_DEFAULT``)
while it holds its default, so files written before the field existed keep their bytes.
``from_jsonable`` refuses unknown, missing or mistyped fields with the field's path.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from enum import Enum
from typing import Any, Union, cast, get_args, get_origin, get_type_hints


def to_jsonable(value: Any) -> Any:
    """Plain JSON values; a field marked ``omit_default`` is left out while at its default."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (f.metadata.get("omit_default") and getattr(value, f.name) == _default(f))
        }
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


class SchemaError(ValueError):
    pass


def from_jsonable(cls: Any, data: Any, where: str = "manifest") -> Any:
    """Build ``cls`` from JSON data, refusing unknown, missing or mistyped fields."""
    origin = get_origin(cls)
    if origin in (Union, types.UnionType):
        options = get_args(cls)
        if data is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return from_jsonable(inner[0], data, where)
    if dataclasses.is_dataclass(cls):
        return _dataclass_from(cls, data, where)
    if isinstance(cls, type) and issubclass(cls, Enum):  # a StrEnum: one of its values
        if not isinstance(data, str) or data not in {m.value for m in cls}:
            raise SchemaError(f"{where} must be one of {', '.join(m.value for m in cls)}")
        return cls(data)
    if origin is tuple:
        if not isinstance(data, list):
            raise SchemaError(f"{where} must be a list")
        (item,) = [a for a in get_args(cls) if a is not Ellipsis]
        return tuple(from_jsonable(item, v, f"{where}[{i}]") for i, v in enumerate(data))
    if origin is dict:
        if not isinstance(data, dict):
            raise SchemaError(f"{where} must be an object")
        _, value_type = get_args(cls)
        return {k: from_jsonable(value_type, v, f"{where}.{k}") for k, v in data.items()}
    return _scalar_from(cls, data, where)


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    """The dataclass's field types, resolved once: resolving compiles each annotation's
    string, and a manifest or record is read field by field, often many times a run."""
    return get_type_hints(cls)


def _dataclass_from(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SchemaError(f"{where} must be an object")
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    unknown = set(data) - {f.name for f in fields}
    if unknown:
        raise SchemaError(f"{where} has unknown field {sorted(unknown)[0]!r}")
    missing = {
        f.name
        for f in fields
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    }
    if missing:
        raise SchemaError(f"{where} lacks field {sorted(missing)[0]!r}")
    kwargs = {
        name: from_jsonable(hints[name], value, f"{where}.{name}") for name, value in data.items()
    }
    return cast(Any, cls)(**kwargs)


_SCALARS: dict[Any, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _scalar_from(cls: Any, data: Any, where: str) -> Any:
    if cls not in _SCALARS:
        raise SchemaError(f"{where}: unsupported type {cls!r}")  # pragma: no cover
    accepted, words = _SCALARS[cls]
    if not isinstance(data, accepted) or (cls is not bool and isinstance(data, bool)):
        raise SchemaError(f"{where} must be {words}")
    return float(cast(float, data)) if cls is float else data
