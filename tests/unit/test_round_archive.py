"""A round archive whose SHA256SUMS and files disagree: the names, and how many were left off."""

from __future__ import annotations

from pathlib import Path

from hub_kit.archive import check_sums, write_sums


def _archive(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(name.encode())
    write_sums(folder, {})
    return folder


def test_a_whole_archive_holds(tmp_path: Path) -> None:
    assert check_sums(_archive(tmp_path / "0000", ["a", "b"])) is None


def test_a_long_disagreement_says_how_many_were_left_off(tmp_path: Path) -> None:
    folder = _archive(tmp_path / "0000", ["a"])
    for name in ("b", "c", "d", "e", "f"):
        (folder / name).write_bytes(b"stray")
    assert check_sums(folder) == "SHA256SUMS and the folder disagree about b, c, d and 2 more"


def test_a_short_disagreement_names_them_all(tmp_path: Path) -> None:
    folder = _archive(tmp_path / "0000", ["a", "b"])
    (folder / "b").unlink()
    (folder / "c").write_bytes(b"stray")
    assert check_sums(folder) == "SHA256SUMS and the folder disagree about b, c"
