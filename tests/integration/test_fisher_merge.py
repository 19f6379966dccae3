"""Fisher merging through the real files: sites ship fisher.* tensors, the hub merges by them."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flsilo.cli.app import run
from hub_kit.strategies.math import fisher_weighted_mean
from tests.conftest import Federation, hub_root
from tests.integration.test_hub import resign, rows


@dataclass
class FisherRound:
    """The session's federation switched to Fisher merging, round 0 aggregated under it and
    round 1 trained at both sites (bundles in the sites' outboxes, not yet carried)."""

    fed: Federation
    bundles: dict[str, Path]

    def copy(self, dest: Path) -> FisherRound:
        fed = self.fed.copy(dest)
        return FisherRound(
            fed, {s: dest / b.relative_to(self.fed.root) for s, b in self.bundles.items()}
        )


@pytest.fixture(scope="module")
def fisher_template(
    federation_template: Federation, tmp_path_factory: pytest.TempPathFactory
) -> FisherRound:
    fed = federation_template.copy(tmp_path_factory.mktemp("fisher") / "fed")
    config = fed.hub / "federation.toml"
    config.write_text(config.read_text().replace('merge = "average"', 'merge = "fisher"'))
    fed.carry()
    assert run(["aggregate", str(fed.hub)]) == 0  # round 0's plan was signed before the change
    name = "fed-r0001.safetensors"
    bundles = {}
    for site, site_dir in fed.sites.items():
        shutil.copy(fed.hub / "packages" / name, site_dir / "packages")
        shutil.copy(fed.hub / "packages" / f"{name}.sig", site_dir / "packages")
        assert run(["train", str(site_dir / "packages" / name), "--site", str(site_dir)]) == 0
        bundles[site] = site_dir / "outbox" / f"fed-r0001-{site}.safetensors"
    return FisherRound(fed, bundles)


@pytest.fixture
def fisher_round(fisher_template: FisherRound, tmp_path: Path) -> FisherRound:
    return fisher_template.copy(tmp_path / "fed")


def test_fisher_round_ships_merges_and_replays(fisher_round: FisherRound, cli) -> None:
    fed, bundles = fisher_round.fed, fisher_round.bundles
    p1 = fed.hub / "packages" / "fed-r0001.safetensors"
    plan = json.loads(cli("inspect", p1, "--json").out)["manifest"]["package"]["plan"]
    assert plan["merge"] == "fisher"

    manifest = json.loads(cli("inspect", bundles["site-a"], "--json").out)["manifest"]
    assert manifest["bundle"]["fisher"] == sorted(load_file(str(p1)))  # logreg: all are params
    loaded = {site: load_file(str(b)) for site, b in bundles.items()}
    for t in loaded.values():
        params = [k for k in t if not k.startswith("fisher.")]
        assert {f"fisher.{k}" for k in params} == {k for k in t if k.startswith("fisher.")}
        assert all((t[f"fisher.{k}"] >= 0).all() and t[f"fisher.{k}"].any() for k in params)

    for b in bundles.values():
        shutil.copy(b, fed.hub / "inbox")
        shutil.copy(f"{b}.sig", fed.hub / "inbox")
    result = cli("aggregate", fed.hub, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["report"]["merge"] == "fisher"
    merged = load_file(str(fed.hub / "packages" / "fed-r0002.safetensors"))
    samples = np.array([270.0, 180.0])
    sites = sorted(loaded)
    for name, got in merged.items():
        want = fisher_weighted_mean(
            [loaded[s][name].astype(np.float64).ravel() for s in sites],
            [loaded[s][f"fisher.{name}"].astype(np.float64).ravel() for s in sites],
            samples,
        )
        np.testing.assert_array_equal(got.ravel(), want.astype(np.float32))
        plain = sum(w * loaded[s][name] for w, s in zip(samples, sites, strict=True)) / 450
        assert not np.allclose(got, plain, atol=1e-6)  # the Fisher changed the answer
    assert "fisher" not in {k.split(".")[0] for k in merged}  # the package is the model only
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay")
    assert audit.code == 0, audit.out


def test_fisher_round_refuses_bundles_without_or_with_wrong_fisher(
    fisher_round: FisherRound, cli, tmp_path: Path
) -> None:
    fed, bundles = fisher_round.fed, fisher_round.bundles
    key = fed.keys / "site-a"
    # a: Fisher stripped (as an old flsilo would send); b: a declared Fisher tensor missing
    a = bundles["site-a"]
    stripped = resign(
        a,
        tmp_path / a.name,
        key,
        tensors=_tensors(a, drop_fisher=True),
        fisher=(),
    )
    b = bundles["site-b"]
    partial = resign(
        b, tmp_path / b.name, fed.keys / "site-b", tensors=_tensors(b, drop_first=True)
    )
    for f in (stripped, partial):
        shutil.copy(f, fed.hub / "inbox")
        shutil.copy(f"{f}.sig", fed.hub / "inbox")
    result = cli("aggregate", fed.hub, "--json", "--min-sites", "1")
    assert result.code == 1, result.out
    verdicts = rows(result.out)
    assert verdicts[a.name]["code"] == verdicts[b.name]["code"] == "wrong-fisher"


def _tensors(path: Path, drop_fisher: bool = False, drop_first: bool = False) -> dict:
    from flsilo.format.tensorfile import RawTensor

    loaded = load_file(str(path))
    first = sorted(k for k in loaded if k.startswith("fisher."))[0]
    out = {}
    for name, array in loaded.items():
        if name.startswith("fisher.") and (drop_fisher or (drop_first and name == first)):
            continue
        out[name] = RawTensor.from_numpy(array)
    return out
