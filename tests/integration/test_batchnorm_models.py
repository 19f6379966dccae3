"""BatchNorm models: frozen BatchNorm keeps the package's statistics, so DP accepts it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import build_federation, hub_root, make_key, needs

pytestmark = needs("opacus", reason="DP tests need the 'dp' extra (Opacus)")

BN_MODEL = (
    "from torch import nn\n"
    "def build(shape, n):\n"
    "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, n))\n"
)
DP = ("--dp-noise-multiplier", "1", "--dp-budget", "50", "--dp-clip", "1")


@pytest.fixture
def bn_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "bnmodel.py").write_text(BN_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return "bnmodel:build"


def test_dp_federation_trains_a_model_whose_batchnorm_is_frozen(bn_model, cli, tmp_path):
    fed = build_federation(tmp_path / "fed", "periodic:2", bn_model, ("--freeze", "1.*,2.*", *DP))
    package0 = load_file(str(fed.hub / "packages" / "fed-r0000.safetensors"))
    for bundle in fed.bundles.values():
        assert sorted(load_file(str(bundle))) == ["3.bias", "3.weight"]
    fed.carry()
    res = cli("aggregate", fed.hub, "--json")
    assert res.code == 0, res.err
    package1 = load_file(json.loads(res.out)["report"]["package"])
    for name in ("2.running_mean", "2.running_var", "2.num_batches_tracked"):
        assert np.array_equal(package1[name], package0[name])
    assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0


def test_dp_federation_refuses_a_model_whose_batchnorm_trains(bn_model, cli, tmp_path):
    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", bn_model,
        "--classes", "a,b", "--input-shape", "1,8,8", "--key", key, "--freeze", "1.*", *DP,
    )  # fmt: skip
    assert res.code == 2
    assert "error[dp-batchnorm]" in res.err and "BatchNorm1d" in res.err
    assert "--freeze" in res.err and "norm=group" in res.err
    assert not (tmp_path / "hub").exists()


def test_adapters_freeze_the_batchnorm_base_so_dp_trains_b_and_the_head(bn_model, cli, tmp_path):
    fed = build_federation(
        tmp_path / "fed", "periodic:1", bn_model, ("--adapters", "lora:r=2", *DP)
    )
    package0 = load_file(str(fed.hub / "packages" / "fed-r0000.safetensors"))
    for bundle in fed.bundles.values():
        assert sorted(load_file(str(bundle))) == ["1.lora_B.weight", "3.bias", "3.weight"]
    fed.carry()
    res = cli("aggregate", fed.hub, "--json")
    assert res.code == 0, res.err
    package1 = load_file(json.loads(res.out)["report"]["package"])
    for name in ("1.weight", "1.lora_A.weight", "2.running_mean", "2.running_var"):
        assert np.array_equal(package1[name], package0[name])
