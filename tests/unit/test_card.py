"""hub_kit.card.write_card (``flsilo report``): a card is never written over anything, and
the folder is refused before the trust root or the hub is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from hub_kit.card import write_card


def test_a_folder_that_holds_something_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "card"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    hub = tmp_path / "no-hub"
    with pytest.raises(UsageError) as err:
        write_card(tmp_path / "p.safetensors", hub, out, None, None)
    assert err.value.code == Code.EXISTS and "not empty" in err.value.one_line()
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    afile = tmp_path / "card.md"
    afile.write_text("a file")
    with pytest.raises(UsageError) as err:
        write_card(tmp_path / "p.safetensors", hub, afile, None, None)
    assert err.value.code == Code.EXISTS and afile.read_text() == "a file"


def test_an_empty_folder_goes_on_to_the_trust_root(tmp_path: Path) -> None:
    out = tmp_path / "card"
    out.mkdir()
    with pytest.raises(UsageError) as err:
        write_card(tmp_path / "p.safetensors", tmp_path / "no-hub", out, None, None)
    assert err.value.code == Code.AUDIT_TRUST_ROOT
    assert out.is_dir() and not any(out.iterdir())
