"""Frozen dataclasses with an exact JSON form: the hub's log events and the site's records.

A class that derives from :class:`JsonFields` gets ``to_json`` and ``from_json`` from its
fields and their annotations (``str``, ``int``, ``float``, ``bool``, ``X | None``, a
mapping, a tuple of strings, another ``JsonFields``). ``from_json`` refuses what it would
not write back exactly: a missing or mistyped field, a ``null`` where the field is left
out (:data:`FieldError`), or a field the class does not know (``newer``: a newer writer's).
Numbers keep the type JSON gave them, so a line read and written again keeps its bytes:
unlike :mod:`flsilo.format.jsonable` (the manifest's encoding, which makes every float field a
float), these files are hashed line by line into a chain, and must round-trip exactly.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

_OMIT = "omit"
LEFT_OUT = {_OMIT: True}
"""Field metadata: the field is left out of the JSON while it is ``None`` (``False`` for a flag)."""


class FieldError(ValueError):
    """A JSON object whose fields are not the class's as flsilo writes them."""

    def __init__(self, message: str, *, newer: bool = False) -> None:
        super().__init__(message)
        self.newer = newer
        """True for a field this flsilo does not know (a newer writer's)."""


class JsonFields:
    """``to_json`` and ``from_json`` from the dataclass's fields and their annotations."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, omit in _shape(type(self)).written:
            value = getattr(self, name)
            if omit and (value is None or value is False):
                continue
            if isinstance(value, JsonFields):
                value = value.to_json()
            out[name] = list(value) if isinstance(value, tuple) else value
        return self._out(out)

    def _out(self, out: dict[str, Any]) -> dict[str, Any]:
        """The JSON object from the fields' (a kind whose keys are not its fields changes it)."""
        return out

    @classmethod
    def _in(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The fields' values from the JSON object: the inverse of :meth:`_out`."""
        return dict(data)

    @classmethod
    def from_json(cls: type[_J], data: Mapping[str, Any]) -> _J:
        shape = _shape(cls)
        if not isinstance(data, Mapping):
            raise FieldError(f"{shape.what}: not a JSON object")
        original, data = dict(data), cls._in(data)
        if not shape.known.issuperset(data):
            unknown = sorted(set(data) - shape.known)
            raise FieldError(
                f"{shape.what}: field {unknown[0]!r} is not one this flsilo knows", newer=True
            )
        values: dict[str, Any] = {}
        for name, read, omit, where in shape.read():
            if name in data:
                values[name] = read(data[name], where)
            elif not omit:
                raise FieldError(f"{shape.what}: field {name!r} is missing")
        made = cls(**values)
        if made.to_json() != original:  # e.g. null where the log leaves a field out
            raise FieldError(f"{shape.what}: its fields are not as flsilo writes them")
        return made


_J = TypeVar("_J", bound=JsonFields)
Reader = Callable[[Any, str], Any]


class _Shape:
    """What ``to_json`` and ``from_json`` need of one class, worked out once: its fields,
    which are left out, and a reader per field (asking ``typing`` about an annotation costs
    more than checking a value, and a log is read event by event, many times a run)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        kind = getattr(cls, "KIND", None)
        self.what = f"{kind} event" if kind else cls.__name__
        found = fields(cls)
        self.known = frozenset(f.name for f in found)
        self.written = [(f.name, bool(f.metadata.get(_OMIT))) for f in found]
        self._readers: list[tuple[str, Reader, bool, str]] | None = None

    def read(self) -> list[tuple[str, Reader, bool, str]]:
        """(name, reader, left out while None, place in messages) per field, in field order;
        resolved at the first read: a class may name one defined after it."""
        if self._readers is None:
            hints = get_type_hints(self.cls)
            self._readers = [
                (name, _reader(hints[name]), omit, f"{self.what}: {name!r}")
                for name, omit in self.written
            ]
        return self._readers


_SHAPES: dict[type, _Shape] = {}


def _shape(cls: type) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is None:
        shape = _SHAPES[cls] = _Shape(cls)
    return shape


_CHECKS: dict[Any, tuple[type | tuple[type, ...], str]] = {
    str: (str, "a string"),
    int: (int, "an integer"),
    float: ((int, float), "a number"),
    bool: (bool, "true or false"),
}


def _reader(hint: Any) -> Reader:
    """The reader of one annotation: ``value`` if it is of the JSON type ``hint`` names
    (nested events made), else refused in the words of the type."""
    nullable = False
    if get_origin(hint) in (Union, types.UnionType):
        args = get_args(hint)
        nullable = type(None) in args
        hint = next(a for a in args if a is not type(None))
    read = _plain_reader(hint)
    if not nullable:
        return read

    def or_none(value: Any, where: str) -> Any:
        return None if value is None else read(value, where)

    return or_none


def _plain_reader(hint: Any) -> Reader:
    if isinstance(hint, type) and is_dataclass(hint) and issubclass(hint, JsonFields):
        nested = hint

        def event(value: Any, where: str) -> Any:
            return (
                nested.from_json(value) if isinstance(value, dict) else _wrong(where, "an object")
            )

        return event
    if hint in _CHECKS:
        kinds, words = _CHECKS[hint]
        exact_bool = hint is bool

        def scalar(value: Any, where: str) -> Any:
            if isinstance(value, kinds) and (exact_bool or not isinstance(value, bool)):
                return value
            return _wrong(where, words)

        return scalar
    if get_origin(hint) in (Mapping, dict) or hint is dict:
        of_text = get_args(hint)[1:] == (str,)  # Mapping[str, str]

        def mapping(value: Any, where: str) -> Any:
            if isinstance(value, dict) and (
                not of_text or all(isinstance(v, str) for v in value.values())
            ):
                return value
            return _wrong(where, "an object of strings" if of_text else "an object")

        return mapping
    if get_origin(hint) is tuple:  # tuple[str, ...]: a JSON list of strings

        def strings(value: Any, where: str) -> Any:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            return _wrong(where, "a list of strings")

        return strings

    def unknown(_value: Any, _where: str) -> Any:
        raise AssertionError(f"no JSON type for {hint!r}")

    return unknown


def _wrong(where: str, expected: str) -> Any:
    raise FieldError(f"{where} is not {expected}")
