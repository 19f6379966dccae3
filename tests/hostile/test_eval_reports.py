"""Hostile evaluation reports: every malformed one is refused with a code, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsilo.runtime.errors import FlsiloError
from flsilo.signing import evalreport as er
from flsilo.signing.keys import PublicKey, generate_key
from flsilo.signing.trust import SingleKey

GOOD = {
    "kind": "evaluation",
    "format_version": 1,
    "federation": "fed",
    "site": "site-a",
    "round": 3,
    "package": "fed-r0003.safetensors",
    "package_sha256": "0" * 64,
    "task": "classify",
    "created_at": "2026-12-07T10:00:00Z",
    "samples": 10,
    "metrics": {"accuracy": 0.5},
}
KEY = generate_key("ed25519")
TRUST = SingleKey(PublicKey.from_key(KEY.public_key()), "the test key")


def _write(tmp_path: Path, data: bytes, name: str = "r0003-site-a.eval.json") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    er.sig_of(path).write_bytes(er.sign(data, KEY))
    return path


def test_the_good_report_verifies(tmp_path: Path) -> None:
    verified = er.verify_report(_write(tmp_path, er.encode(GOOD)), TRUST)
    assert verified.site == "site-a" and verified.round == 3


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"kind":"evaluation","kind":"evaluation"}\n', "duplicate key"),
        (b"\xff\xfe not utf-8", "malformed"),
        (b"[" * 50_000 + b"]" * 50_000, "malformed"),
        (
            er.encode({**GOOD, "metrics": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}}),
            "deeper",
        ),
        (er.encode({**GOOD, "samples": True}), "'samples'"),
        (er.encode({**GOOD, "site": "../etc"}), "site id"),
        (er.encode({**GOOD, "created_at": "yesterday"}), "created_at"),
        (json.dumps(GOOD).encode(), "canonical"),
        (b"null\n", "not a JSON object"),
    ],
)
def test_malformed_reports_are_refused(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(FlsiloError) as caught:
        er.verify_report(_write(tmp_path, data), TRUST)
    assert caught.value.code in ("eval-report-malformed", "too-large")
    assert reason in caught.value.message


def test_a_newer_report_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    with pytest.raises(FlsiloError) as caught:
        er.verify_report(_write(tmp_path, er.encode({**GOOD, "format_version": 2})), TRUST)
    assert caught.value.code == "manifest-version" and "upgrade" in (caught.value.hint or "")


def test_oversize_report_and_signature_are_refused_from_their_size(tmp_path: Path) -> None:
    big = tmp_path / "r0003-site-a.eval.json"
    with big.open("wb") as fh:
        fh.truncate(3 << 30)  # a 3 GiB sparse file: refused before it is read
    er.sig_of(big).write_bytes(b"x")
    with pytest.raises(FlsiloError) as caught:
        er.verify_report(big, TRUST)
    assert caught.value.code == "too-large"
    other = tmp_path / "other"
    other.mkdir()
    small = _write(other, er.encode(GOOD))
    with er.sig_of(small).open("wb") as fh:
        fh.truncate(3 << 30)
    with pytest.raises(FlsiloError) as caught:
        er.verify_report(small, TRUST)
    assert caught.value.code == "too-large"


def test_a_missing_signature(tmp_path: Path) -> None:
    path = _write(tmp_path, er.encode(GOOD))
    er.sig_of(path).unlink()
    with pytest.raises(FlsiloError) as caught:
        er.verify_report(path, TRUST)
    assert caught.value.code == "missing-signature"


PLUGIN = {
    **GOOD,
    "task": "mypkg.tasks:TASK",
    "metrics": {"samples": 10, "f1": 0.5, "per_class": {}},
}


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ({**PLUGIN, "primary_metric": ["f1"]}, "is not a figure's key"),
        ({**PLUGIN, "primary_metric": None}, "is not a figure's key"),
        ({**PLUGIN, "primary_metric": "x" * 200_000}, "is not a figure's key"),
        ({**PLUGIN, "primary_metric": "f1é"}, "is not a figure's key"),
        ({**PLUGIN, "primary_metric": "[bold red]f1"}, "is not a figure's key"),
        ({**PLUGIN, "primary_metric": "f1\n"}, "is not a figure's key"),
        ({**PLUGIN, "primary_metric": "per_class"}, "names 'per_class', which is not a figure"),
        ({**GOOD, "primary_metric": "accuracy"}, "a classify report has no field"),
    ],
)
def test_a_hostile_primary_metric_is_refused_in_one_line(
    tmp_path: Path, report: dict, reason: str
) -> None:
    """``primary_metric`` (a plug-in's reports name their leading figure): of the wrong type,
    huge, not ASCII, rich markup, naming a table of the report, or in a built-in task's
    report: refused as malformed in one line that does not echo what it read."""
    with pytest.raises(FlsiloError) as caught:
        er.verify_report(_write(tmp_path, er.encode(report)), TRUST)
    assert caught.value.code == "eval-report-malformed" and reason in caught.value.message
    assert "\n" not in caught.value.one_line() and len(caught.value.one_line()) < 400


def test_a_plugin_report_naming_its_figure_or_an_undefined_one_verifies(tmp_path: Path) -> None:
    for named in ("f1", "top1"):  # top1: a figure the report does not hold (shown as "-")
        path = _write(tmp_path, er.encode({**PLUGIN, "primary_metric": named}))
        assert er.primary_figure(er.verify_report(path, TRUST).report) == named
