"""strict_json and json_depth give what the versions they replaced gave, value or refusal
word for word (too deep said before any other fault), on valid, malformed and hostile texts."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import numpy as np
import pytest

from flsilo.format.tensorfile import JsonDepthError, json_depth, strict_json

# --- the parser as it was (frozen here as the reference) ---------------------------------

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SURROGATE = re.compile("[\ud800-\udfff]")


def reference_json_depth(text: str) -> int:
    bare = _JSON_STRING.sub("", text)
    if "[" not in bare and "{" not in bare:
        return 0
    steps = np.frombuffer(bare.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    delta = np.zeros(steps.shape, dtype=np.int64)
    delta[(steps == ord("[")) | (steps == ord("{"))] = 1
    delta[(steps == ord("]")) | (steps == ord("}"))] = -1
    return int(np.cumsum(delta).max(initial=0))


def _reference_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reference_has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(
            _reference_has_surrogate(k) or _reference_has_surrogate(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_reference_has_surrogate(v) for v in value)
    return False


def reference_strict_json(text: str, *, max_depth: int = 32) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard number {name}")

    depth = reference_json_depth(text)
    if depth > max_depth:
        raise JsonDepthError(f"nested {depth} levels deep (limit {max_depth})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text holds an unpaired surrogate") from exc
    try:
        value = json.loads(
            text, object_pairs_hook=_reference_no_duplicates, parse_constant=no_constants
        )
    except RecursionError as exc:
        raise JsonDepthError("nested too deeply") from exc
    if "\\u" in text and _reference_has_surrogate(value):
        raise ValueError("a string holds an unpaired UTF-16 surrogate escape")
    return value


# --- texts ---------------------------------------------------------------------------------

STRINGS = [
    "",
    "a",
    "[{",
    "}]",
    'say "hi"',
    "back\\slash",
    "\\",
    "é",
    "\ud83d\ude00",
    "\\u0041",
    "x]y",
]
PIECES = ['"', "\\", "[", "]", "{", "}", ",", ":", "\\u", "\\ud800", "\\\\", 'x"', "NaN", " "]


def _value(rng: random.Random, depth: int) -> Any:
    if depth <= 0 or rng.random() < 0.25:
        return rng.choice([0, -1, 2.5, True, None, *STRINGS])
    if rng.random() < 0.5:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(STRINGS): _value(rng, depth - 1) for _ in range(rng.randint(0, 3))}


def _text(rng: random.Random) -> str:
    depth = rng.choice([1, 2, 4, 8, 30, 31, 32, 33, 34, 40])
    value: Any = _value(rng, min(depth, 4))
    for _ in range(depth - 4 if depth > 4 else 0):  # a chain that reaches the depth
        value = [value] if rng.random() < 0.5 else {"k": value}
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.15:  # a key given twice
        text = text.replace("{", '{"d": 1, "d": 2, ', 1) if "{" in text else text
    if rng.random() < 0.4:  # damaged: cut, or a stray piece put in
        at = rng.randint(0, len(text))
        text = text[:at] if rng.random() < 0.3 else text[:at] + rng.choice(PIECES) + text[at:]
    if rng.random() < 0.05:
        text += "\ud800"  # a lone surrogate in the text itself
    return text


HOSTILE = [
    "[" * 33 + "]" * 33,
    "[" * 32 + "]" * 32,
    "[" * 100000,
    '{"a":' * 40 + "1" + "}" * 40,
    '"' + "[" * 50 + '"',
    '["\\"' + "[" * 40 + '"]',
    '["\\\\"' + "[" * 40 + "]" * 40 + "]",
    "[" * 40 + '"' + "]" * 40,
    '"\\' + "[" * 40,
    "[NaN]",
    '{"a": 1, "a": 2}',
    '["\\ud800"]',
    '["\\ud83d\\ude00"]',
    "[\ud800]",
    " [1] ",
    "",
    "[1] [2]",
    '{"x": "\\q"}',
]


def _outcome(parse: Any, text: str) -> tuple[str, ...]:
    try:
        value = parse(text)
    except ValueError as exc:  # JsonDepthError is one: the type is compared too
        return ("refused", type(exc).__name__, str(exc))
    return ("read", repr(value))


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_texts_are_read_or_refused_as_before(text: str) -> None:
    assert _outcome(strict_json, text) == _outcome(reference_strict_json, text)
    assert json_depth(text) == reference_json_depth(text)


def test_generated_texts_are_read_or_refused_as_before() -> None:
    rng = random.Random(7)
    seen: set[str] = set()
    for _ in range(600):
        text = _text(rng)
        outcome = _outcome(strict_json, text)
        assert outcome == _outcome(reference_strict_json, text), text
        assert json_depth(text) == reference_json_depth(text), text
        seen.add(outcome[1] if outcome[0] == "refused" else "read")
        seen.update(w for w in ("nested", "duplicate", "surrogate") if w in outcome[-1])
    assert {"read", "JsonDepthError", "JSONDecodeError", "nested", "duplicate", "surrogate"} <= seen
