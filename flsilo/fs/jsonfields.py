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
from collections.abc import Mapping
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
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get(_OMIT) and (value is None or value is False):
                continue
            if isinstance(value, JsonFields):
                value = value.to_json()
            out[f.name] = list(value) if isinstance(value, tuple) else value
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
        kind = getattr(cls, "KIND", None)
        what = f"{kind} event" if kind else cls.__name__
        if not isinstance(data, Mapping):
            raise FieldError(f"{what}: not a JSON object")
        original, data = dict(data), cls._in(data)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise FieldError(
                f"{what}: field {unknown[0]!r} is not one this flsilo knows", newer=True
            )
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                values[f.name] = _typed(hints[f.name], data[f.name], f"{what}: {f.name!r}")
            elif not f.metadata.get(_OMIT):
                raise FieldError(f"{what}: field {f.name!r} is missing")
        made = cls(**values)
        if made.to_json() != original:  # e.g. null where the log leaves a field out
            raise FieldError(f"{what}: its fields are not as flsilo writes them")
        return made


_J = TypeVar("_J", bound=JsonFields)
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The class's field types, resolved once."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` if it is of the JSON type ``hint`` names (nested events made), else refused."""
    if get_origin(hint) in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if isinstance(hint, type) and is_dataclass(hint) and issubclass(hint, JsonFields):
        return hint.from_json(value) if isinstance(value, dict) else _wrong(where, "an object")
    checks: dict[Any, tuple[type | tuple[type, ...], str]] = {
        str: (str, "a string"),
        int: (int, "an integer"),
        float: ((int, float), "a number"),
        bool: (bool, "true or false"),
    }
    if hint in checks:
        kinds, words = checks[hint]
        if isinstance(value, kinds) and (hint is bool or not isinstance(value, bool)):
            return value
        return _wrong(where, words)
    if get_origin(hint) in (Mapping, dict) or hint is dict:
        of_text = get_args(hint)[1:] == (str,)  # Mapping[str, str]
        if isinstance(value, dict) and (
            not of_text or all(isinstance(v, str) for v in value.values())
        ):
            return value
        return _wrong(where, "an object of strings" if of_text else "an object")
    if get_origin(hint) is tuple:  # tuple[str, ...]: a JSON list of strings
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        return _wrong(where, "a list of strings")
    raise AssertionError(f"no JSON type for {hint!r}")


def _wrong(where: str, expected: str) -> Any:
    raise FieldError(f"{where} is not {expected}")
