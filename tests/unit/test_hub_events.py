"""hub_kit.events: each log line read into its typed event writes back the same bytes, and a
line that is not an event as flsilo writes it is refused (damage, or a newer writer).

The logs here were committed before the events were typed: ``tests/fixtures/eventlog`` holds
every kind and every optional field (its ``make.py`` says how it was made; its
``hub-claims.jsonl`` the init and aggregate fields of --require-evaluations and --eval,
added later), the others are the version-2 fixture and the golden round's hub.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from flsilo.fs.hashchain import HashChain, canonical_line
from flsilo.runtime.errors import MalformedInputError, VerificationError
from hub_kit.eventlog import EventLog, Logged
from hub_kit.events import (
    KINDS,
    Accept,
    Aggregate,
    Enroll,
    Evaluation,
    Kind,
    Reject,
    ReportedMetrics,
    Revoke,
    of_kind,
)
from hub_kit.state import fold

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LOGS = {
    "every-kind": FIXTURES / "eventlog" / "events.jsonl",
    "hub-claims": FIXTURES / "eventlog" / "hub-claims.jsonl",
    "version-2": FIXTURES / "v2" / "hub" / "events.jsonl",
    "golden-round": FIXTURES / "golden_round" / "hub" / "events.jsonl",
}


def _written(ev: Logged) -> bytes:
    record = {**ev.body.to_json(), "seq": ev.seq, "time": ev.time, "event": ev.event.value}
    return canonical_line(record | {"prev": ev.prev}) + b"\n"


@pytest.mark.parametrize("name", sorted(LOGS))
def test_a_log_written_before_the_types_is_written_back_byte_for_byte(name: str) -> None:
    raw = LOGS[name].read_bytes()
    events = EventLog(LOGS[name]).read()
    assert b"".join(_written(ev) for ev in events) == raw


def test_the_fixture_holds_every_kind_and_every_left_out_field() -> None:
    events = EventLog(LOGS["every-kind"]).read()
    assert {ev.event for ev in events} == set(Kind)
    lines = [
        json.loads(line)
        for name in ("every-kind", "hub-claims")  # the second: --require-evaluations, --eval
        for line in LOGS[name].read_text().splitlines()
    ]
    present = {key for line in lines for key in line}
    for cls in KINDS.values():
        for name, f in cls.__dataclass_fields__.items():
            if f.metadata.get("omit") and name != "start":  # start: a backbone import's
                assert name in present, f"{cls.KIND}: {name} is in no line"


def test_appending_typed_events_writes_what_the_log_holds(tmp_path: Path) -> None:
    events = EventLog(LOGS["every-kind"]).read()
    copy = EventLog(tmp_path / "events.jsonl")
    _, added = copy.append([ev.body for ev in events])
    assert [a.body for a in added] == [ev.body for ev in events]
    ours = copy.path.read_bytes().split(b"\n")[:-1]
    theirs = LOGS["every-kind"].read_bytes().split(b"\n")[:-1]
    strip = ("time", "prev")  # the copy was written now, so its links differ
    assert [_without(line, strip) for line in ours] == [_without(line, strip) for line in theirs]


def _without(line: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in json.loads(line).items() if k not in keys}


def test_the_state_folded_from_the_fixture() -> None:
    events = EventLog(LOGS["every-kind"]).read()
    state = fold(events)
    assert state.round == 1 and len(state.rotations) == 1 and len(state.retired_hub_keys) == 1
    assert state.active_sites() == ["site-a", "site-b"]  # site-c revoked, site-b rekeyed
    assert [e.site for e in state.release_officers()] == ["officer"]
    ((_, rekey),) = [(ev, e) for ev, e in of_kind(events, Enroll) if e.replaces]
    old = next(e for e in state.enrolments if e.site == "site-b" and e.revoked_at is not None)
    assert rekey.replaces == old.key.fingerprint and rekey.valid_after == old.revoked_before + 1
    window = next(e for e in state.enrolments if e.site == "site-c")
    assert (window.valid_after, window.valid_before) == (1700000000, 4000000000)
    assert set(state.dp_accepted) == {"site-a", "site-b"}
    assert {(r, code) for r, _sha, code in state.rejected} == {(0, "bad-signature")}
    ((_, agg),) = of_kind(events, Aggregate)
    assert agg.server_optimizer == "fedavgm" and agg.server_state is not None
    assert state.package_data[1] == agg.data_sha256
    ((_, ev),) = of_kind(events, Evaluation)
    assert ev.metric == "accuracy" and ev.archive_round == 0 and ev.site == "site-a"
    capped = [a.site for _, a in of_kind(events, Accept) if a.weight_capped]
    assert len(capped) == 1
    assert all(isinstance(a.metrics_trained, ReportedMetrics) for _, a in of_kind(events, Accept))


def _log_with(tmp_path: Path, kind: str, data: dict[str, Any]) -> Path:
    """The fixture with one more well-chained line of ``kind`` holding ``data``."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(LOGS["every-kind"].read_bytes())
    HashChain(path).append([(kind, data)])
    return path


REVOKE = Revoke(site="site-a", valid_before=4102444800).to_json()
REJECT = Reject(0, "site-a", "0" * 64, "f.safetensors", "bad-signature", "why").to_json()


@pytest.mark.parametrize(
    ("kind", "data", "words"),
    [
        ("revoke", {"site": "site-a"}, "field 'valid_before' is missing"),
        ("revoke", REVOKE | {"valid_before": "soon"}, "'valid_before' is not an integer"),
        ("revoke", REVOKE | {"valid_before": True}, "'valid_before' is not an integer"),
        ("reject", REJECT | {"round": 0.0}, "'round' is not an integer"),
        ("enroll", {"site": "x", "key": "k", "fingerprint": "f", "role": None}, "not as flsilo"),
        ("accept", {"round": 0}, "is missing"),
    ],
    ids=["missing", "string", "bool", "float-round", "null-left-out-field", "short-accept"],
)
def test_an_event_with_missing_or_mistyped_fields_is_log_broken(
    tmp_path: Path, kind: str, data: dict[str, Any], words: str
) -> None:
    path = _log_with(tmp_path, kind, data)
    with pytest.raises(VerificationError) as caught:
        EventLog(path).read()
    assert caught.value.code == "log-broken"
    assert caught.value.message.startswith("event log line 15: ") and words in caught.value.message


def test_a_field_this_flsilo_does_not_know_gets_the_upgrade_hint(tmp_path: Path) -> None:
    path = _log_with(tmp_path, "revoke", REVOKE | {"reason": "a newer flsilo says why"})
    with pytest.raises(MalformedInputError) as caught:
        EventLog(path).read()
    assert caught.value.code == "log-version"
    assert "'reason' is not one this flsilo knows" in caught.value.message
    assert "upgrade flsilo" in (caught.value.hint or "")


def test_an_evaluation_with_two_figures_is_a_newer_writers(tmp_path: Path) -> None:
    ((_, ev),) = of_kind(EventLog(LOGS["every-kind"]).read(), Evaluation)
    path = _log_with(tmp_path, "evaluation", ev.to_json() | {"auroc": 0.5})
    with pytest.raises(MalformedInputError) as caught:
        EventLog(path).read()
    assert caught.value.code == "log-version"


def test_a_time_that_is_not_utc_is_log_broken(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    raw = LOGS["every-kind"].read_bytes()
    last = raw.split(b"\n")[-2]
    record = REVOKE | {"seq": 15, "time": "yesterday", "event": "revoke"}
    path.write_bytes(raw + canonical_line(record | {"prev": sha256(last).hexdigest()}) + b"\n")
    with pytest.raises(VerificationError) as caught:
        EventLog(path).read()
    assert caught.value.code == "log-broken" and "'yesterday' is not a UTC time" in str(
        caught.value
    )
