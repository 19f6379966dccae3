"""Server optimizers through the real files: state file, provenance, log, replay, tampering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from hub_kit.eventlog import EventLog
from hub_kit.events import Aggregate, of_kind
from hub_kit.server_optimizers import fedadam_step, fedavgm_step
from tests.conftest import Federation, hub_root


def _next_round(fed: Federation, cli, round_: int) -> None:
    """Every site trains on package ``round_`` and carries its bundle to the hub inbox."""
    name = f"fed-r{round_:04d}.safetensors"
    for site_dir in fed.sites.values():
        shutil.copy(fed.hub / "packages" / name, site_dir / "packages")
        shutil.copy(fed.hub / "packages" / f"{name}.sig", site_dir / "packages")
        assert cli("train", site_dir / "packages" / name, "--site", site_dir).code == 0
        for f in (site_dir / "outbox").glob(f"fed-r{round_:04d}-*"):
            shutil.copy(f, fed.hub / "inbox")


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}


def _provenance(cli, package: Path) -> dict:
    return json.loads(cli("inspect", package, "--json").out)["manifest"]["package"]["provenance"]


def test_fedadam_two_rounds_state_replayed_and_tamper_caught(federation: Federation, cli) -> None:
    fed = federation
    fed.carry()
    first = cli("aggregate", fed.hub, "--server-optimizer", "fedadam", "--server-lr", "0.05")
    assert first.code == 0, first.err
    p0, p1 = (fed.hub / "packages" / f"fed-r000{i}.safetensors" for i in (0, 1))
    # the package is one FedAdam step from round 0 along the sample-weighted average
    x, avg = _weights(p0), {}
    bundles = sorted((fed.hub / "rounds" / "0000").glob("*.safetensors"))
    weights = [270.0, 180.0]
    for name in x:
        avg[name] = sum(w * _weights(b)[name] for w, b in zip(weights, bundles, strict=True))
        avg[name] /= sum(weights)
    got = _weights(p1)
    state = load_file(str(fed.hub / "state" / "fed-r0001-server.safetensors"))
    for name in x:
        tau = 1e-3
        want, m, v = fedadam_step(
            x[name], avg[name] - x[name], 0 * x[name], tau**2 + 0 * x[name], 0.05, 0.9, 0.99, tau
        )
        np.testing.assert_allclose(got[name], want.astype(np.float32), rtol=0, atol=1e-7)
        np.testing.assert_array_equal(state[f"m.{name}"], m.astype(np.float32))
        np.testing.assert_array_equal(state[f"v.{name}"], v.astype(np.float32))
        assert not np.allclose(got[name], avg[name], atol=1e-4)  # not a plain average
    prov1 = _provenance(cli, p1)
    assert prov1["server"]["optimizer"] == "fedadam"
    assert prov1["server"]["params"]["lr"] == 0.05
    assert prov1["server"]["state_in_sha256"] is None

    _next_round(fed, cli, 1)
    second = cli("aggregate", fed.hub, "--server-optimizer", "fedadam", "--server-lr", "0.05")
    assert second.code == 0, second.err
    prov2 = _provenance(cli, fed.hub / "packages" / "fed-r0002.safetensors")
    assert prov2["server"]["state_in_sha256"] == prov1["server"]["state_out_sha256"]
    events = EventLog(fed.hub / "events.jsonl").read()
    logged = [e.server_state_sha256 for _, e in of_kind(events, Aggregate)]
    assert logged == [prov1["server"]["state_out_sha256"], prov2["server"]["state_out_sha256"]]

    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out
    checks = {c["name"]: c for c in json.loads(audit.out)["audit"]["checks"]}
    assert "fedadam state" in checks["replay r0002"]["detail"]

    # altering the state the second round read is caught by replay, and names the file
    state1 = fed.hub / "state" / "fed-r0001-server.safetensors"
    data = bytearray(state1.read_bytes())
    data[-1] ^= 1
    state1.write_bytes(bytes(data))
    bad = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert bad.code == 3
    failed = {c["name"]: c["detail"] for c in json.loads(bad.out)["audit"]["checks"] if not c["ok"]}
    assert set(failed) == {
        "server state fed-r0001-server.safetensors",  # against the log's digest
        "replay r0001",
        "replay r0002",
    }
    assert "bad-server-state" in failed["replay r0002"] or "state" in failed["replay r0002"]


def test_fedavgm_in_federation_toml_is_the_default(federation: Federation, cli) -> None:
    fed = federation
    config = (fed.hub / "federation.toml").read_text()
    assert 'server_optimizer = "none"' in config
    # turn server momentum on for this federation, then aggregate with the default
    (fed.hub / "federation.toml").write_text(
        config.replace('server_optimizer = "none"', 'server_optimizer = "fedavgm"')
    )
    fed.carry()
    result = cli("aggregate", fed.hub, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["report"]["server_optimizer"] == "fedavgm(lr=1.0,momentum=0.9)"
    x = _weights(fed.hub / "packages" / "fed-r0000.safetensors")
    got = _weights(fed.hub / "packages" / "fed-r0001.safetensors")
    state = load_file(str(fed.hub / "state" / "fed-r0001-server.safetensors"))
    for name in x:
        # first step from m = 0 with lr 1: the package is the average, momentum the delta
        want, m = fedavgm_step(x[name], got[name] - x[name], 0 * x[name], 1.0, 0.9)
        np.testing.assert_allclose(state[f"m.{name}"], m, atol=1e-6)
    assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--server-optimizer", "sgdm"), "bad-server-optimizer"),
        (("--server-optimizer", "fedyogi", "--server-betas", "0.9"), "bad-server-optimizer"),
        (("--server-optimizer", "fedavgm", "--server-momentum", "1.5"), "bad-config"),
        (("--merge", "ties"), "bad-merge"),
    ],
)
def test_bad_server_settings_are_usage_errors(
    tmp_path: Path, cli, args: tuple[str, ...], code: str
) -> None:
    from tests.conftest import make_key

    key = make_key(tmp_path / "hub")
    result = cli(
        "hub", "init", tmp_path / "h", "--federation", "f", "--model", "logreg",
        "--classes", "a,b", "--input-shape", "4", "--key", key, *args,
    )  # fmt: skip
    assert result.code == 2 and code in result.err
    assert not (tmp_path / "h").exists()


def test_hub_init_records_the_server_optimizer_in_the_hub_table(tmp_path: Path, cli) -> None:
    import tomllib

    from tests.conftest import make_key

    key = make_key(tmp_path / "hub")
    result = cli(
        "hub", "init", tmp_path / "h", "--federation", "f", "--model", "logreg",
        "--classes", "a,b", "--input-shape", "4", "--key", key,
        "--server-optimizer", "fedyogi", "--server-lr", "0.02", "--server-betas", "0.9,0.999",
        "--merge", "fisher",
    )  # fmt: skip
    assert result.code == 0, result.err
    config = tomllib.loads((tmp_path / "h" / "federation.toml").read_text())
    assert config["hub"]["server_optimizer"] == "fedyogi"
    assert config["hub"]["server_lr"] == 0.02
    assert config["hub"]["server_betas"] == [0.9, 0.999]
    assert config["plan"]["merge"] == "fisher"
    plan = json.loads(cli("inspect", result.out.strip().splitlines()[-1], "--json").out)
    assert plan["manifest"]["package"]["plan"]["merge"] == "fisher"  # sites see it
