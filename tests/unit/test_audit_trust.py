"""hub_kit.audit_trust: the trust root's forms, and the log's key history checked as a site
checks a rotation chain."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from flsilo.runtime.errors import UsageError
from flsilo.signing.keys import PrivateKey, generate_key, public_of
from flsilo.signing.rotation import make_rotation
from hub_kit.audit_trust import hub_key_history, trust_root
from hub_kit.events import HubEvent, Init, Logged, RotateKey
from tests.conftest import make_key

FED = "fed"


def event(seq: int, body: HubEvent) -> Logged:
    return Logged(seq, "2026-12-07T00:00:00Z", "0" * 64, f"{seq:064x}", body)


def init(key: PrivateKey) -> Logged:
    hub_key = public_of(key).openssh_line()
    return event(1, Init(federation=FED, package="p.safetensors", sha256="0" * 64, hub_key=hub_key))


def rotate(seq: int, old: PrivateKey, new: PrivateKey, place: int, fed: str = FED) -> Logged:
    r = make_rotation(old, new, fed, place)
    return event(
        seq,
        RotateKey(
            statement=r.statement,
            old_signature=r.old_signature,
            new_signature=r.new_signature,
            hub_key=public_of(new).openssh_line(),
            fingerprint=public_of(new).fingerprint,
        ),
    )


KEYS = [generate_key() for _ in range(3)]


def test_genuine_rotations_give_every_key_in_order() -> None:
    a, b, c = KEYS
    keys, problem = hub_key_history([init(a), rotate(2, a, b, 1), rotate(3, b, c, 2)], FED, "log")
    assert problem is None
    assert [k.blob for k in keys] == [public_of(k).blob for k in (a, b, c)]


@pytest.mark.parametrize(
    ("events", "words"),
    [
        ([init(KEYS[0]), rotate(2, KEYS[0], KEYS[1], 1, fed="other")], "another federation"),
        ([init(KEYS[0]), rotate(2, KEYS[0], KEYS[1], 2)], "stands at place 1"),
        ([init(KEYS[0]), rotate(2, KEYS[1], KEYS[2], 1)], "does not start at the hub key"),
        (
            [init(KEYS[0]), rotate(2, KEYS[0], KEYS[1], 1), rotate(3, KEYS[1], KEYS[0], 2)],
            "leads back to",
        ),
    ],
    ids=["other-federation", "wrong-place", "not-from-the-key-before", "back-to-a-left-key"],
)
def test_a_history_that_does_not_chain_is_refused(events: list[Logged], words: str) -> None:
    _keys, problem = hub_key_history(events, FED, "log")
    assert problem is not None and words in problem, problem


def test_an_event_naming_another_key_than_its_statement_is_refused() -> None:
    a, b, c = KEYS
    genuine = rotate(2, a, b, 1)
    assert isinstance(genuine.body, RotateKey)
    forged = replace(genuine, body=replace(genuine.body, hub_key=public_of(c).openssh_line()))
    keys, problem = hub_key_history([init(a), forged], FED, "log")
    assert problem is not None and "another key than its signed statement" in problem
    assert len(keys) == 1  # only the init key is reached


def test_the_trust_root_is_exactly_one_of_fingerprint_or_key(tmp_path: Path) -> None:
    pub = make_key(tmp_path / "k").with_suffix(".pub")
    for bad in ((None, None), ("SHA256:" + "A" * 43, pub), ("SHA256:too-short", None)):
        with pytest.raises(UsageError) as caught:
            trust_root(*bad)
        assert caught.value.code == "audit-trust-root"
    by_key = trust_root(None, pub)
    assert by_key.given == "--hub-key" and by_key.file == str(pub)
    bare = trust_root(by_key.fingerprint.removeprefix("SHA256:"), None)
    assert bare.fingerprint == by_key.fingerprint and bare.given == "--hub-fingerprint"
    assert by_key.key is not None and bare.matches(by_key.key)


def test_the_audit_counts_one_package_in_the_singular(tmp_path: Path) -> None:
    """The golden round's hub holds round 0's package alone: "the 1 package ... is"."""
    import shutil

    from hub_kit.audit import audit

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "golden_round"
    hub = tmp_path / "hub"
    shutil.copytree(fixture / "hub", hub)
    report = audit(hub, trust_root(None, fixture / "keys" / "hub.pub"))
    (check,) = [c for c in report.checks if c.name == "packages known to the log"]
    assert report.ok and check.detail == "the 1 package in packages/ is in the log"
