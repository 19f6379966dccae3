"""The demo at a tiny scale: real files verify, the audit replays, federation beats the weakest site."""

from __future__ import annotations

import json
from pathlib import Path

from flsilo.artifact import verify_file
from flsilo.trust import AllowedSigners


def test_tiny_demo_end_to_end(tmp_path: Path, cli) -> None:
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
    assert accuracy["federated (final package)"] > min(local)
    trust = AllowedSigners.load(out / "hub" / "allowed_signers")
    artifacts = sorted((out / "hub" / "packages").glob("*.safetensors")) + sorted(
        (out / "hub" / "rounds").rglob("*.safetensors")
    )
    assert len(artifacts) == doc["verified_files"] == 4 + 3 * 3
    for f in artifacts:
        verify_file(f, trust)
    assert cli("audit", out / "hub", "--replay").code == 0
    assert cli("demo", "--out", out).code == 2  # never clobbers an earlier demo
