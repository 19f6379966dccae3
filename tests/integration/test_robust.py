"""Robust rules, the norm gate and the weight-share cap, through aggregate and audit --replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from flsilo.format.tensorfile import RawTensor
from tests.conftest import Federation, fingerprint, hub_root, make_key
from tests.integration.test_hub import resign

HONEST = ("site-a", "site-b", "site-c", "site-d")
ATTACKER = "site-e"


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, RawTensor]:
    return {n: RawTensor.from_numpy(a) for n, a in arrays.items()}


def _crowd(f: Federation, cli, *, scale: float = 50.0, attacker_samples: int | None = None) -> None:
    """Five sites in the inbox: a, b (trained), c, d (a's update, jittered), e (scaled attack;
    ``scale=-1``: a's update with its sign flipped)."""
    base = load_file(str(f.hub / "packages" / "fed-r0000.safetensors"))
    trained = load_file(str(f.bundles["site-a"]))
    rng = np.random.default_rng(7)
    for site in ("site-c", "site-d", ATTACKER):
        key = make_key(f.keys / site)
        pub = Path(f"{key}.pub")
        assert cli("hub", "enroll", f.hub, site, pub, "--fingerprint", fingerprint(pub)).code == 0
        if site == ATTACKER:
            arrays = {n: base[n] + scale * (trained[n] - base[n]) for n in base}
        else:
            arrays = {
                n: trained[n] + rng.normal(0, 1e-3, trained[n].shape).astype(trained[n].dtype)
                for n in base
            }
        changes: dict[str, Any] = {"site": site}
        if site == ATTACKER and attacker_samples is not None:
            changes["num_samples"] = attacker_samples
        dest = f.hub / "inbox" / f"fed-r0000-{site}.safetensors"
        resign(f.bundles["site-a"], dest, key, tensors=_tensors(arrays), **changes)
    f.carry()


def _update_norm(f: Federation) -> float:
    base = load_file(str(f.hub / "packages" / "fed-r0000.safetensors"))
    new = load_file(str(f.hub / "packages" / "fed-r0001.safetensors"))
    return float(np.sqrt(sum(np.sum((new[n] - base[n]).astype(np.float64) ** 2) for n in base)))


def _aggregate(f: Federation, cli, *args: object) -> dict[str, Any]:
    result = cli("aggregate", f.hub, "--json", *args)
    assert result.code == 0, result.out + result.err
    report: dict[str, Any] = json.loads(result.out)["report"]
    return report


def _replays(f: Federation, cli) -> None:
    audit = cli("audit", f.hub, *hub_root(f.hub), "--replay", "--json")
    checks = {c["name"]: c for c in json.loads(audit.out)["audit"]["checks"]}
    assert audit.code == 0, audit.out
    assert checks["replay r0001"]["ok"]


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "rule",
    [
        "multi-krum:1",
        pytest.param("multi-krum:1,2", marks=SLOW),
        pytest.param("norm-bound:1", marks=SLOW),
        pytest.param("centered-clip:1", marks=SLOW),
        "geomedian",
        pytest.param("median-of-means:3", marks=SLOW),
    ],
)
def test_robust_rules_resist_a_scaled_update_and_replay(
    federation: Federation, cli, rule: str
) -> None:
    _crowd(federation, cli)
    report = _aggregate(federation, cli, "--strategy", rule)
    assert report["strategy"] == rule
    _replays(federation, cli)
    honest = max(r["update_norm"] for r in report["rows"] if r["site"] != ATTACKER)
    # the attacker's update is 50x a real one: FedAvg would move ~10x; the rule stays near
    assert _update_norm(federation) < 2 * honest
    package = federation.hub / "packages" / "fed-r0001.safetensors"
    provenance = json.loads(cli("inspect", package, "--json").out)["manifest"]["package"][
        "provenance"
    ]
    assert provenance["strategy"] == rule.split(":")[0]


def test_every_aggregate_reports_anomaly_figures_and_shares(federation: Federation, cli) -> None:
    _crowd(federation, cli)
    report = _aggregate(federation, cli)
    rows = {r["site"]: r for r in report["rows"]}
    assert set(rows) == {*HONEST, ATTACKER}
    # FedAvg follows the attacker's 50x update (compare the robust rules above)
    assert _update_norm(federation) > 5 * max(rows[s]["update_norm"] for s in HONEST)
    assert sum(r["share"] for r in rows.values()) == pytest.approx(1.0)
    norms = {s: rows[s]["update_norm"] for s in rows}
    assert norms[ATTACKER] > 10 * max(norms[s] for s in HONEST)
    assert rows[ATTACKER]["distance"] > max(rows[s]["distance"] for s in HONEST)
    table = cli("audit", federation.hub, *hub_root(federation.hub))  # the log still chains
    assert table.code == 0


def test_norm_gate_quarantines_an_oversized_update(federation: Federation, cli) -> None:
    _crowd(federation, cli)
    report = _aggregate(federation, cli, "--norm-gate", "3")
    rows = {r["site"]: r for r in report["rows"]}
    assert rows[ATTACKER]["verdict"] == "rejected" and rows[ATTACKER]["code"] == "norm-gate"
    assert all(rows[s]["verdict"] == "accepted" for s in HONEST)
    reasons = list((federation.hub / "quarantine").rglob("*site-e*.reason.txt"))
    assert reasons and json.loads(reasons[0].read_text())["code"] == "norm-gate"
    assert not list((federation.hub / "rounds" / "0000").glob("*site-e*"))
    assert (federation.hub / "inbox" / "fed-r0000-site-e.safetensors").exists()
    _replays(federation, cli)


def test_weight_share_cap_clips_and_is_recorded(federation: Federation, cli) -> None:
    _crowd(federation, cli, scale=1.0, attacker_samples=10**7)
    report = _aggregate(federation, cli, "--max-weight-share", "0.3")
    rows = {r["site"]: r for r in report["rows"]}
    assert rows[ATTACKER]["share"] == pytest.approx(0.3)
    assert rows[ATTACKER]["capped"] and not rows["site-a"]["capped"]
    assert sum(r["share"] for r in rows.values()) == pytest.approx(1.0)
    log = (federation.hub / "events.jsonl").read_text().splitlines()
    aggregate = [json.loads(x) for x in log if '"aggregate"' in x][-1]
    assert '"max_weight_share":0.3' in json.dumps(aggregate, separators=(",", ":"))
    assert '"weight_capped":true' in "".join(log)
    _replays(federation, cli)


def test_a_cap_below_one_over_k_is_a_usage_error(federation: Federation, cli) -> None:
    _crowd(federation, cli)
    result = cli("aggregate", federation.hub, "--max-weight-share", "0.1")
    assert result.code == 2
    assert "below 1/5" in result.err and "Traceback" not in result.err
    assert not (federation.hub / "packages" / "fed-r0001.safetensors").exists()


def test_multi_krum_needs_enough_sites(federation: Federation, cli) -> None:
    federation.carry()
    result = cli("aggregate", federation.hub, "--strategy", "multi-krum:1")
    assert result.code != 0
    assert "5 required" in result.err


def test_each_update_is_shown_with_its_cosine_to_the_median_update(
    federation: Federation, cli
) -> None:
    _crowd(federation, cli, scale=-1.0)  # same norm as a's update: the norm gate cannot see it
    dry = cli("aggregate", federation.hub, "--dry-run", "--json")
    assert dry.code == 0, dry.out
    before = {r["site"]: r for r in json.loads(dry.out)["report"]["rows"]}
    text = cli("aggregate", federation.hub, "--dry-run")
    assert "cos." in text.err and "-1.00" in text.err
    report = _aggregate(federation, cli)
    rows = {r["site"]: r for r in report["rows"]}
    for shown in (before, rows):
        assert shown[ATTACKER]["cosine"] < -0.9
        assert all(shown[s]["cosine"] > 0.5 for s in HONEST)
    assert rows[ATTACKER]["verdict"] == "accepted"  # flagged, not refused: no gate was set
    assert report["cosine_gate"] is None


def test_cosine_gate_quarantines_a_sign_flipped_update_and_replays(
    federation: Federation, cli
) -> None:
    _crowd(federation, cli, scale=-1.0)
    report = _aggregate(federation, cli, "--cosine-gate", "0", "--norm-gate", "3")
    rows = {r["site"]: r for r in report["rows"]}
    assert rows[ATTACKER]["verdict"] == "rejected" and rows[ATTACKER]["code"] == "cosine-gate"
    assert rows[ATTACKER]["cosine"] < -0.9 and "below the cosine gate 0" in rows[ATTACKER]["reason"]
    assert all(rows[s]["verdict"] == "accepted" for s in HONEST)
    reasons = list((federation.hub / "quarantine").rglob("*site-e*.reason.txt"))
    assert reasons and json.loads(reasons[0].read_text())["code"] == "cosine-gate"
    log = (federation.hub / "events.jsonl").read_text().splitlines()
    aggregate = [json.loads(x) for x in log if '"aggregate"' in x][-1]
    assert aggregate["cosine_gate"] == 0 and aggregate["inputs"] == len(HONEST)
    provenance = json.loads(
        cli("inspect", federation.hub / "packages" / "fed-r0001.safetensors", "--json").out
    )["manifest"]["package"]["provenance"]
    assert [r["reason"] for r in provenance["rejects"]] == ["cosine-gate"]
    _replays(federation, cli)


def test_the_federations_cosine_gate_applies_and_honest_rounds_pass_it(
    federation: Federation, cli
) -> None:
    toml = federation.hub / "federation.toml"
    toml.write_text(toml.read_text().replace("[hub]\n", "[hub]\ncosine_gate = 0.2\n"))
    _crowd(federation, cli, scale=1.0)  # five honest updates, one of them from site-e
    report = _aggregate(federation, cli)
    assert report["cosine_gate"] == 0.2
    assert all(r["verdict"] == "accepted" and r["cosine"] > 0.2 for r in report["rows"])
    _replays(federation, cli)


def test_a_cosine_gate_outside_minus_one_to_one_is_a_usage_error(
    federation: Federation, cli
) -> None:
    federation.carry()
    result = cli("aggregate", federation.hub, "--cosine-gate", "1")
    assert result.code == 2 and "error[bad-cosine-gate]" in result.err
    assert not (federation.hub / "packages" / "fed-r0001.safetensors").exists()
