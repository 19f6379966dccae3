"""federation.load builds a configuration once per distinct file content in a process, and
never hands back one built from other bytes than the file holds now."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

import pytest

from flsilo.plans import federation as fed
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

GOLDEN = (
    Path(__file__).resolve().parents[2] / "fixtures" / "golden_round" / "hub" / "federation.toml"
)


def _copy(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name / fed.FEDERATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def test_the_same_bytes_give_the_same_configuration(tmp_path: Path) -> None:
    text = GOLDEN.read_text(encoding="utf-8")
    first = fed.load(_copy(tmp_path, "a", text))
    again = fed.load(_copy(tmp_path, "b", text))
    assert again is first
    assert first.plan.lr == 0.1 and first.hub.min_sites == 2


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    text = GOLDEN.read_text(encoding="utf-8")
    path = _copy(tmp_path, "a", text)
    before = fed.load(path)
    path.write_text(text.replace("lr = 0.1\n", "lr = 0.2\n"), encoding="utf-8")
    assert fed.load(path).plan.lr == 0.2
    path.write_text(text.replace("min_sites = 2", "min_sites = 0"), encoding="utf-8")
    with pytest.raises(MalformedInputError) as refused:
        fed.load(path)
    assert refused.value.code == Code.BAD_FEDERATION
    assert "min_sites" in refused.value.message and str(path) in str(refused.value.path)
    path.write_text(text + " ", encoding="utf-8")  # one byte more, the same settings
    changed = fed.load(path)
    assert changed == before and changed is not before


def test_a_refusal_names_the_file_it_was_read_from(tmp_path: Path) -> None:
    bad = GOLDEN.read_text(encoding="utf-8").replace('federation = "fed"', 'federation = "F"')
    for name in ("a", "b"):
        path = _copy(tmp_path, name, bad)
        with pytest.raises(MalformedInputError) as refused:
            fed.load(path)
        assert str(refused.value.path) == str(path)


def _mutable_parts(value: object, where: str) -> list[str]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        frozen = type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
        found = [] if frozen else [f"{where} ({type(value).__name__} is not frozen)"]
        for f in dataclasses.fields(value):
            found += _mutable_parts(getattr(value, f.name), f"{where}.{f.name}")
        return found
    if isinstance(value, tuple):
        return [p for i, v in enumerate(value) for p in _mutable_parts(v, f"{where}[{i}]")]
    if isinstance(value, str | int | float | bool | enum.Enum) or value is None:
        return []
    return [f"{where} ({type(value).__name__})"]


def test_a_shared_configuration_cannot_be_changed_by_whoever_holds_it() -> None:
    config = fed.load(GOLDEN)
    assert _mutable_parts(config, "config") == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.plan.lr = 1.0  # type: ignore[misc]
