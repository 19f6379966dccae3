"""site_kit.state and site_kit.record: a site's rollback state and its record, typed, read
and written back byte for byte; what is not as flsilo writes it is refused.

``tests/fixtures/site_record`` was committed before the site's files were typed (its
``make.py`` says how it was made): every record kind, and a state that followed a hub key
rotation.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from flsilo.fs.hashchain import HashChain, canonical_line
from flsilo.runtime.errors import MalformedInputError, VerificationError, WorkspaceError
from site_kit import record as site_record
from site_kit.record import DataChanged, PackageArrived, RecordKind, Rekeyed, Trained, of_kind
from site_kit.state import SiteState, read_state, write_state

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "site_record"
SITES = ("site-a", "site-b")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of site-a's state and record."""
    root = tmp_path / "site-a"
    shutil.copytree(FIXTURE / "site-a", root)
    return root


@pytest.mark.parametrize("name", SITES)
def test_the_state_is_written_back_byte_for_byte(name: str, tmp_path: Path) -> None:
    state = read_state(FIXTURE / name)
    write_state(tmp_path, state)
    assert (tmp_path / "state.json").read_bytes() == (FIXTURE / name / "state.json").read_bytes()


@pytest.mark.parametrize("name", SITES)
def test_the_record_is_written_back_byte_for_byte(name: str) -> None:
    entries = site_record.events(FIXTURE / name)
    lines = b"".join(canonical_line(e.record()) + b"\n" for e in entries)
    assert lines == (FIXTURE / name / "record.jsonl").read_bytes()


def test_the_fixture_holds_every_kind_and_field() -> None:
    entries = [e for name in SITES for e in site_record.events(FIXTURE / name)]
    assert {e.body.KIND for e in entries} == set(RecordKind)
    (rekey,) = of_kind(entries, Rekeyed)
    assert rekey.old_site_key and rekey.checked_against_kit
    spent = [t.privacy_budget_spent for t in of_kind(entries, Trained)]
    assert all(s is not None and s.epsilon_total >= s.epsilon_round for s in spent)
    assert any(t.overrides.get("data") for t in of_kind(entries, Trained))
    (change,) = of_kind(entries, DataChanged)
    assert change.old_data != change.data


def test_the_state_after_a_rotation_and_two_rounds() -> None:
    state = read_state(FIXTURE / "site-a")
    assert state.last_round == 1 and state.hub_key and len(state.hub_keys_before or ()) == 1
    arrived = list(of_kind(site_record.events(FIXTURE / "site-a"), PackageArrived))
    assert [state.package_for(p.round) for p in arrived] == [p.sha256 for p in arrived]
    assert read_state(FIXTURE / "site-b").hub_key is None  # never followed a rotation


def test_a_state_that_trains_and_follows_a_rotation() -> None:
    state = SiteState().trained(0, "a" * 64).trained(2, "b" * 64).trained(1, "c" * 64)
    assert state.last_round == 2 and state.package_for(1) == "c" * 64
    moved = state.followed("key-2", ["key-1"]).followed("key-3", ["key-2"])
    assert moved.hub_key == "key-3" and moved.hub_keys_before == ("key-1", "key-2")
    assert SiteState().to_json() == {"last_round": -1, "packages": {}}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"last_round": "1", "packages": {}}', "'last_round' is not an integer"),
        ('{"last_round": 1, "packages": {"0": 7}}', "is not an object of strings"),
        ('{"last_round": 1, "packages": {}, "hub_key": null}', "not as flsilo writes them"),
        ('{"last_round": 1, "packages": {}, "hub_keys_before": "k"}', "a list of strings"),
        ("[1]", "not a JSON object"),
        ("{truncated", "damaged"),
    ],
)
def test_a_garbled_state_is_refused(site: Path, text: str, words: str) -> None:
    (site / "state.json").write_text(text)
    with pytest.raises(WorkspaceError) as caught:
        read_state(site)
    assert caught.value.code == "state" and words in caught.value.message


def test_a_state_field_this_flsilo_does_not_know_gets_the_upgrade_hint(site: Path) -> None:
    (site / "state.json").write_text('{"last_round": 1, "packages": {}, "epoch": 3}')
    with pytest.raises(WorkspaceError) as caught:
        read_state(site)
    assert "upgrade flsilo" in (caught.value.hint or "")


def _append(site: Path, kind: str, data: dict[str, Any]) -> None:
    HashChain(site / "record.jsonl").append([(kind, data)])


def test_a_record_kind_or_field_this_flsilo_does_not_know_is_a_newer_writers(site: Path) -> None:
    _append(site, "evaluated", {"round": 1})
    with pytest.raises(MalformedInputError) as caught:
        site_record.events(site)
    assert caught.value.code == "record-version" and "'evaluated'" in caught.value.message
    shutil.copy(FIXTURE / "site-a" / "record.jsonl", site / "record.jsonl")
    arrived = PackageArrived(round=2, file="p.safetensors", sha256="0" * 64).to_json()
    _append(site, "package", arrived | {"size": 1})
    with pytest.raises(MalformedInputError) as caught:
        site_record.events(site)
    assert caught.value.code == "record-version" and "'size'" in caught.value.message


def test_a_record_line_lacking_a_field_is_broken(site: Path) -> None:
    _append(site, "package", {"round": 2, "file": "p.safetensors"})
    with pytest.raises(VerificationError) as caught:
        site_record.events(site)
    assert caught.value.code == "record-broken" and "'sha256' is missing" in caught.value.message


def test_note_package_records_a_package_once(site: Path) -> None:
    before = (site / "record.jsonl").read_bytes()
    (first, *_) = of_kind(site_record.events(site), PackageArrived)
    site_record.note_package(site, first.round, first.file, first.sha256)
    assert (site / "record.jsonl").read_bytes() == before
    sha = hashlib.sha256(b"new").hexdigest()
    site_record.note_package(site, 2, "fed-r0002.safetensors", sha)
    last = site_record.events(site)[-1].body
    assert last == PackageArrived(round=2, file="fed-r0002.safetensors", sha256=sha)
