"""flsilo.format.copynames: the names a careless copy gives a bundle, named in a hint."""

from __future__ import annotations

from pathlib import Path

from flsilo.format.copynames import misnamed_files


def test_a_second_copy_is_not_offered_the_name_of_the_first(tmp_path: Path) -> None:
    """A file manager adds ' (1)' because X.safetensors is there: renaming the copy to X
    would replace the bundle the round reads; an upper-cased lone copy is offered the name."""
    for name in ("a.safetensors", "a.safetensors (1)", "b.SAFETENSORS"):
        (tmp_path / name).write_bytes(b"x")
    first, second = misnamed_files(tmp_path)
    assert first.startswith("a.safetensors (1): not read: a second copy of a.safetensors,")
    assert "delete this copy" in first and "rename" not in first
    assert second.startswith("b.SAFETENSORS: not read:")
    assert "rename it to b.safetensors and its .sig to b.safetensors.sig" in second
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.safetensors", "a.safetensors (1)", "b.SAFETENSORS",
    ]  # fmt: skip
