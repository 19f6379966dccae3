"""Plain JSON values from frozen dataclasses and back, strictly (the manifest's encoding).

``to_jsonable`` leaves out a field marked ``omit_default`` (``flsilo.plans.plan.OMIT_DEFAULT``)
while it holds its default, so files written before the field existed keep their bytes.
``from_jsonable`` refuses unknown, missing or mistyped fields with the field's path.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable
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
    return _converter(cls)(data, where)


Converter = Callable[[Any, str], Any]
"""Builds one type's value from JSON data; the ``str`` names the place in messages."""


@functools.cache
def _converter(cls: Any) -> Converter:
    """The converter of ``cls``, worked out once per type: a manifest, record or settings
    file is read field by field, many times a run, and asking ``typing`` what each
    annotation means costs more than checking the value."""
    origin = get_origin(cls)
    if origin in (Union, types.UnionType):
        options = get_args(cls)
        nullable = type(None) in options
        inner = _converter(next(o for o in options if o is not type(None)))

        def union(data: Any, where: str) -> Any:
            if data is None and nullable:
                return None
            return inner(data, where)

        return union
    if dataclasses.is_dataclass(cls):
        return _dataclass_converter(cls)
    if isinstance(cls, type) and issubclass(cls, Enum):  # a StrEnum: one of its values
        return _enum_converter(cls)
    if origin is tuple:
        return _tuple_converter(cls)
    if origin is dict:
        _, value_type = get_args(cls)
        value = _converter(value_type)

        def mapping(data: Any, where: str) -> Any:
            if not isinstance(data, dict):
                raise SchemaError(f"{where} must be an object")
            return {k: value(v, f"{where}.{k}") for k, v in data.items()}

        return mapping
    scalar = _SCALARS.get(cls)
    if scalar is None:

        def unsupported(_data: Any, where: str) -> Any:
            raise SchemaError(f"{where}: unsupported type {cls!r}")  # pragma: no cover

        return unsupported
    return scalar


def _enum_converter(cls: type[Enum]) -> Converter:
    values = {m.value for m in cls}
    words = ", ".join(m.value for m in cls)

    def enum(data: Any, where: str) -> Any:
        if not isinstance(data, str) or data not in values:
            raise SchemaError(f"{where} must be one of {words}")
        return cls(data)

    return enum


def _tuple_converter(cls: Any) -> Converter:
    item_types = [a for a in get_args(cls) if a is not Ellipsis]
    items = [_converter(t) for t in item_types[:1]]

    def sequence(data: Any, where: str) -> Any:
        if not isinstance(data, list):
            raise SchemaError(f"{where} must be a list")
        (item,) = items if len(item_types) == 1 else item_types  # tuple[X, ...] only
        return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(data))

    return sequence


def _dataclass_converter(cls: Any) -> Converter:
    fields = dataclasses.fields(cls)
    names = frozenset(f.name for f in fields)
    required = frozenset(
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    # Field converters are looked up at the first value, not here: a dataclass may name
    # itself (directly or through another) in its fields.
    converters: dict[str, Converter] = {}

    def dataclass_from(data: Any, where: str) -> Any:
        if not isinstance(data, dict):
            raise SchemaError(f"{where} must be an object")
        if not names.issuperset(data):
            unknown = set(data) - names
            raise SchemaError(f"{where} has unknown field {sorted(unknown)[0]!r}")
        if not required.issubset(data):
            missing = required - set(data)
            raise SchemaError(f"{where} lacks field {sorted(missing)[0]!r}")
        if not converters:
            hints = get_type_hints(cls)
            converters.update({name: _converter(hints[name]) for name in names})
        kwargs = {name: converters[name](value, f"{where}.{name}") for name, value in data.items()}
        return cast(Any, cls)(**kwargs)

    return dataclass_from


def _str_from(data: Any, where: str) -> Any:
    if not isinstance(data, str):
        raise SchemaError(f"{where} must be a string")
    return data


def _int_from(data: Any, where: str) -> Any:
    if not isinstance(data, int) or isinstance(data, bool):
        raise SchemaError(f"{where} must be an integer")
    return data


def _float_from(data: Any, where: str) -> Any:
    if not isinstance(data, int | float) or isinstance(data, bool):
        raise SchemaError(f"{where} must be a number")
    return float(data)


def _bool_from(data: Any, where: str) -> Any:
    if not isinstance(data, bool):
        raise SchemaError(f"{where} must be true or false")
    return data


_SCALARS: dict[Any, Converter] = {
    str: _str_from,
    int: _int_from,
    float: _float_from,
    bool: _bool_from,
}
