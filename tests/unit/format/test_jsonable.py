"""from_jsonable builds exactly what the field-by-field reader it replaced built, and refuses
exactly what it refused, with the same words: checked on the manifests and settings of the
fixture files and on many mutations of them."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import tomllib
import types
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Union, cast, get_args, get_origin, get_type_hints

import pytest

from flsilo.format import manifest as mf
from flsilo.format.jsonable import SchemaError, from_jsonable
from flsilo.format.tensorfile import read_header, strict_json
from flsilo.plans.federation import FederationConfig
from flsilo.signing.claims import HubEvaluation

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


# --- the reader as it was (frozen here as the reference) ---------------------------------


def reference_from_jsonable(cls: Any, data: Any, where: str = "manifest") -> Any:
    origin = get_origin(cls)
    if origin in (Union, types.UnionType):
        options = get_args(cls)
        if data is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return reference_from_jsonable(inner[0], data, where)
    if dataclasses.is_dataclass(cls):
        return _reference_dataclass_from(cls, data, where)
    if isinstance(cls, type) and issubclass(cls, Enum):
        if not isinstance(data, str) or data not in {m.value for m in cls}:
            raise SchemaError(f"{where} must be one of {', '.join(m.value for m in cls)}")
        return cls(data)
    if origin is tuple:
        if not isinstance(data, list):
            raise SchemaError(f"{where} must be a list")
        (item,) = [a for a in get_args(cls) if a is not Ellipsis]
        return tuple(reference_from_jsonable(item, v, f"{where}[{i}]") for i, v in enumerate(data))
    if origin is dict:
        if not isinstance(data, dict):
            raise SchemaError(f"{where} must be an object")
        _, value_type = get_args(cls)
        return {k: reference_from_jsonable(value_type, v, f"{where}.{k}") for k, v in data.items()}
    return _reference_scalar_from(cls, data, where)


def _reference_dataclass_from(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SchemaError(f"{where} must be an object")
    hints = get_type_hints(cls)
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
        name: reference_from_jsonable(hints[name], value, f"{where}.{name}")
        for name, value in data.items()
    }
    return cast(Any, cls)(**kwargs)


_REFERENCE_SCALARS: dict[Any, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _reference_scalar_from(cls: Any, data: Any, where: str) -> Any:
    if cls not in _REFERENCE_SCALARS:
        raise SchemaError(f"{where}: unsupported type {cls!r}")
    accepted, words = _REFERENCE_SCALARS[cls]
    if not isinstance(data, accepted) or (cls is not bool and isinstance(data, bool)):
        raise SchemaError(f"{where} must be {words}")
    return float(cast(float, data)) if cls is float else data


# --- cases -----------------------------------------------------------------------------


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Node:
    """A small type with every kind of field, naming itself."""

    name: str
    colour: Colour
    weights: dict[str, float]
    sizes: tuple[int | None, ...]
    children: tuple[Node, ...] = ()
    parent: Node | None = None
    flag: bool = field(default=False)


def _manifest_data(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        header, _ = read_header(fh, path.stat().st_size, str(path))
    return cast(dict[str, Any], strict_json(header.metadata[mf.MANIFEST_KEY]))


def _federation_data(path: Path) -> dict[str, Any]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data.pop("format_version")
    data["plan"] = {"local_epochs": 1, **data["plan"]}  # as federation.parse does
    return data


def _seeds() -> list[tuple[Any, Any]]:
    artifacts = sorted((FIXTURES / "golden_round").rglob("*.safetensors"))
    artifacts += sorted((FIXTURES / "v2").rglob("*.safetensors"))
    seeds: list[tuple[Any, Any]] = [(mf.Manifest, _manifest_data(p)) for p in artifacts]
    seeds.append(
        (FederationConfig, _federation_data(FIXTURES / "golden_round/hub/federation.toml"))
    )
    claims = (FIXTURES / "eventlog" / "hub-claims.jsonl").read_text(encoding="utf-8")
    for line in claims.splitlines():
        event = json.loads(line)
        if isinstance(event.get("hub_evaluation"), dict):
            seeds.append((HubEvaluation, event["hub_evaluation"]))

    def leaf() -> dict[str, Any]:
        return {"name": "b", "colour": "blue", "weights": {"x": 1}, "sizes": [1, None]}

    seeds.append((Node, {**leaf(), "name": "a", "children": [leaf()], "parent": leaf()}))
    return seeds


VALUES = [None, True, False, 0, 1, -3, 2.5, "", "x", "red", [], [1], ["a", None], {}, {"k": 1}]


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _places(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _places(v, (*path, i))
    return out


def _mutated(data: Any, rng: random.Random) -> Any:
    data = copy.deepcopy(data)
    for _ in range(rng.choice((1, 1, 2))):
        path = rng.choice(_places(data))
        if not path:
            continue
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = rng.random()
        if action < 0.2 and isinstance(parent, dict):
            del parent[last]
        elif action < 0.3 and isinstance(parent, dict):
            parent[rng.choice(("extra", "zz", "aa"))] = rng.choice(VALUES)
        elif action < 0.4:
            parent[last] = [parent[last]]
        else:
            parent[last] = copy.deepcopy(rng.choice(VALUES))
    return data


def _outcome(read: Any, cls: Any, data: Any) -> tuple[str, ...]:
    try:
        value = read(cls, copy.deepcopy(data), "where")
    except Exception as exc:  # the same refusal: its type and words
        return ("refused", type(exc).__name__, str(exc))
    return ("read", type(value).__name__, repr(value))


SEEDS = _seeds()


def test_the_seeds_cover_every_kind_of_file() -> None:
    kinds = {cls for cls, _ in SEEDS}
    assert {mf.Manifest, FederationConfig, HubEvaluation, Node} <= kinds
    assert sum(cls is mf.Manifest for cls, _ in SEEDS) >= 6


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_every_fixture_reads_as_it_did(index: int) -> None:
    cls, data = SEEDS[index]
    outcome = _outcome(from_jsonable, cls, data)
    assert outcome[0] == "read"
    assert outcome == _outcome(reference_from_jsonable, cls, data)


def test_mutations_read_or_are_refused_as_they_were() -> None:
    rng = random.Random(20261207)
    refused = 0
    for cls, data in SEEDS:
        for _ in range(12):
            mutant = _mutated(data, rng)
            outcome = _outcome(from_jsonable, cls, mutant)
            assert outcome == _outcome(reference_from_jsonable, cls, mutant), mutant
            refused += outcome[0] == "refused"
    assert refused > 100  # the mutations reach the refusals, not only harmless fields


def test_a_wrong_value_is_named_by_its_place() -> None:
    seed = next(data for cls, data in SEEDS if cls is Node)
    bad = copy.deepcopy(seed)
    bad["children"][0]["sizes"][1] = "big"
    with pytest.raises(SchemaError, match=r"^node\.children\[0\]\.sizes\[1\] must be an integer$"):
        from_jsonable(Node, bad, "node")
    bad = copy.deepcopy(seed)
    bad["colour"] = "green"
    with pytest.raises(SchemaError, match=r"^node\.colour must be one of red, blue$"):
        from_jsonable(Node, bad, "node")
