"""The demo: real files verify, the audit replays; at full size, federation beats the weakest site."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsilo.format.artifact import verify_file
from flsilo.signing.trust import AllowedSigners
from tests.conftest import hub_root


def _verify_all(out: Path) -> int:
    trust = AllowedSigners.load(out / "hub" / "allowed_signers")
    artifacts = sorted((out / "hub" / "packages").glob("*.safetensors")) + sorted(
        (out / "hub" / "rounds").rglob("*.safetensors")
    )
    for f in artifacts:
        verify_file(f, trust)
    return len(artifacts)


def test_smallest_demo_runs_the_whole_pipeline(tmp_path: Path, cli) -> None:
    out = tmp_path / "demo"
    args = ("--rounds", "2", "--local-epochs", "1", "--sites", "2", "--max-per-site", "40")
    result = cli("demo", "--out", out, *args, "--model", "logreg", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["audit_ok"] is True
    one_trip = [k for k in doc["accuracy"] if k.startswith("1 trip")]
    assert len(one_trip) == 3  # averaging, Fisher merging, closed-form head
    assert all(0 <= doc["accuracy"][k] <= 1 for k in one_trip)
    # the centralized baseline's lr is chosen on validation from the plan's lr x (0.2, 0.4, 1)
    (central,) = [k for k in doc["accuracy"] if k.startswith("centralized")]
    assert central.removesuffix(")").split(" lr ")[1] in {"0.01", "0.02", "0.05"}
    assert _verify_all(out) == doc["verified_files"] == 3 + 2 * 2
    assert cli("audit", out / "hub", *hub_root(out / "hub"), "--replay").code == 0
    assert cli("demo", "--out", out).code == 2  # never clobbers an earlier demo


@pytest.mark.slow
def test_demo_federation_beats_the_weakest_site(tmp_path: Path, cli) -> None:
    out = tmp_path / "demo"
    result = cli(
        "demo", "--out", out, "--rounds", "3", "--local-epochs", "3", "--model", "logreg", "--json"
    )
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["audit_ok"] is True
    accuracy = doc["accuracy"]
    local = [v for k, v in accuracy.items() if k.endswith("alone")]
    assert len(local) == 3
    federated = next(v for k, v in accuracy.items() if k.startswith("federated"))
    assert federated > min(local)
    assert _verify_all(out) == doc["verified_files"] == 4 + 3 * 3
