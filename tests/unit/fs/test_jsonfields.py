"""JsonFields reads and writes what the field-by-field version it replaced read and wrote,
and refuses what it refused in the same words: the hub's events and the site's records of
the fixture logs, and many mutations of them."""

from __future__ import annotations

import copy
import json
import random
import types
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from flsilo.fs.jsonfields import _OMIT, FieldError, JsonFields
from hub_kit import events as hub_events
from site_kit import record as site_record

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CHAIN = ("seq", "time", "event", "prev")

# --- the reader and writer as they were (frozen here as the reference) ----------------------


def reference_to_json(event: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(event):
        value = getattr(event, f.name)
        if f.metadata.get(_OMIT) and (value is None or value is False):
            continue
        if isinstance(value, JsonFields):
            value = reference_to_json(value)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return event._out(out)


def reference_from_json(cls: Any, data: Any) -> Any:
    kind = getattr(cls, "KIND", None)
    what = f"{kind} event" if kind else cls.__name__
    if not isinstance(data, Mapping):
        raise FieldError(f"{what}: not a JSON object")
    original, data = dict(data), cls._in(data)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise FieldError(f"{what}: field {unknown[0]!r} is not one this flsilo knows", newer=True)
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = _reference_typed(hints[f.name], data[f.name], f"{what}: {f.name!r}")
        elif not f.metadata.get(_OMIT):
            raise FieldError(f"{what}: field {f.name!r} is missing")
    made = cls(**values)
    if reference_to_json(made) != original:
        raise FieldError(f"{what}: its fields are not as flsilo writes them")
    return made


def _reference_typed(hint: Any, value: Any, where: str) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if isinstance(hint, type) and is_dataclass(hint) and issubclass(hint, JsonFields):
        if isinstance(value, dict):
            return reference_from_json(hint, value)
        raise FieldError(f"{where} is not an object")
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
        raise FieldError(f"{where} is not {words}")
    if get_origin(hint) in (Mapping, dict) or hint is dict:
        of_text = get_args(hint)[1:] == (str,)
        if isinstance(value, dict) and (
            not of_text or all(isinstance(v, str) for v in value.values())
        ):
            return value
        raise FieldError(f"{where} is not {'an object of strings' if of_text else 'an object'}")
    if get_origin(hint) is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise FieldError(f"{where} is not a list of strings")
    raise AssertionError(f"no JSON type for {hint!r}")


# --- cases -----------------------------------------------------------------------------------


def _lines(path: Path, kinds: Mapping[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        kind = record["event"]
        out.append((kinds[kind], {k: v for k, v in record.items() if k not in CHAIN}))
    return out


SEEDS = (
    _lines(FIXTURES / "eventlog" / "events.jsonl", hub_events.KINDS)
    + _lines(FIXTURES / "eventlog" / "hub-claims.jsonl", hub_events.KINDS)
    + _lines(FIXTURES / "site_record" / "site-a" / "record.jsonl", site_record.KINDS)
)
VALUES = [None, True, False, 0, 3, -1.5, "", "x", [], ["a"], [1], {}, {"k": "v"}, {"k": 1}]


def _mutated(data: dict[str, Any], rng: random.Random) -> Any:
    data = copy.deepcopy(data)
    places: list[tuple[Any, Any]] = [(data, k) for k in data]
    places += [(v, k) for v in data.values() if isinstance(v, dict) for k in v]
    if not places or rng.random() < 0.05:
        return rng.choice([[], "x", None, {"zz": 1}])
    parent, key = rng.choice(places)
    action = rng.random()
    if action < 0.25:
        del parent[key]
    elif action < 0.35:
        parent[rng.choice(("zz", "aa", "replaces"))] = rng.choice(VALUES)
    else:
        parent[key] = copy.deepcopy(rng.choice(VALUES))
    return data


def _outcome(read: Any, cls: Any, data: Any) -> tuple[Any, ...]:
    try:
        event = read(cls, copy.deepcopy(data))
    except FieldError as exc:
        return ("refused", str(exc), exc.newer)
    return (
        "read",
        repr(event),
        json.dumps(reference_to_json(event), sort_keys=True),
        json.dumps(event.to_json(), sort_keys=True),
    )


def test_the_seeds_hold_every_hub_event_kind_and_site_records() -> None:
    hub = {cls for cls, _ in SEEDS if cls in hub_events.KINDS.values()}
    site = {cls for cls, _ in SEEDS if cls in site_record.KINDS.values()}
    assert len(hub) >= 8 and len(site) >= 2


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_every_fixture_line_reads_and_writes_as_before(index: int) -> None:
    cls, data = SEEDS[index]
    outcome = _outcome(lambda c, d: c.from_json(d), cls, data)
    assert outcome[0] == "read" and outcome[2] == outcome[3] == json.dumps(data, sort_keys=True)
    assert outcome == _outcome(reference_from_json, cls, data)


def test_mutated_lines_are_read_or_refused_as_before() -> None:
    rng = random.Random(11)
    refused = 0
    for cls, data in SEEDS:
        for _ in range(8):
            mutant = _mutated(data, rng)
            outcome = _outcome(lambda c, d: c.from_json(d), cls, mutant)
            assert outcome == _outcome(reference_from_json, cls, mutant), (cls, mutant)
            refused += outcome[0] == "refused"
    assert refused > 50
