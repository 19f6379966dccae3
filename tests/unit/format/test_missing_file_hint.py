"""A package path that does not exist: the hint names the file the operator most likely meant."""

from __future__ import annotations

from pathlib import Path

from flsilo.format.artifact import missing_file_hint


def _packages(folder: Path, rounds: range) -> None:
    folder.mkdir(exist_ok=True)
    for r in rounds:
        (folder / f"xray-r{r:04d}.safetensors").write_bytes(b"")


def test_the_extension_left_off(tmp_path: Path) -> None:
    _packages(tmp_path, range(4))
    assert missing_file_hint(tmp_path / "xray-r0002") == "did you mean xray-r0002.safetensors?"


def test_a_near_miss_suggests_the_newest_match(tmp_path: Path) -> None:
    _packages(tmp_path, range(4))
    assert missing_file_hint(tmp_path / "xray") == "did you mean xray-r0003.safetensors?"
    assert missing_file_hint(tmp_path / "xray-r003.safetensors") == (
        "did you mean xray-r0003.safetensors?"
    )


def test_a_typo_suggests_the_closest_name_not_the_newest(tmp_path: Path) -> None:
    _packages(tmp_path, range(4))
    for typo in ("xray-r0001.safetensros", "xary-r0001.safetensors", "xray-r0001.safetnesors"):
        assert missing_file_hint(tmp_path / typo) == "did you mean xray-r0001.safetensors?"


def test_a_cut_list_says_it_is_cut(tmp_path: Path) -> None:
    _packages(tmp_path, range(12))
    hint = missing_file_hint(tmp_path / "chest-r0001.safetensors")
    assert "xray-r0011.safetensors" in hint and "(the newest 3 of 12)" in hint
    _packages(tmp_path / "few", range(2))
    short = missing_file_hint(tmp_path / "few" / "chest-r0001.safetensors")
    assert "xray-r0000.safetensors, xray-r0001.safetensors" in short and "newest" not in short


def test_an_empty_or_missing_folder(tmp_path: Path) -> None:
    assert missing_file_hint(tmp_path / "nope" / "x") == "check the path and the folder it names"
