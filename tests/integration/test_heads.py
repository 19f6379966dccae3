"""Frozen backbones, partial bundles and one-trip closed-form heads, through the real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flsilo.format import manifest as mf
from flsilo.format.artifact import write_artifact
from flsilo.format.tensorfile import RawTensor
from flsilo.signing.keys import load_private_key
from tests.conftest import Federation, build_federation, hub_root

MLP = "mlp:hidden=16"  # tensors 1.weight, 1.bias (backbone), 3.weight, 3.bias (head)


def _aggregate(cli, fed: Federation) -> Path:
    fed.carry()
    res = cli("aggregate", fed.hub, "--json")
    assert res.code == 0, res.err
    return Path(json.loads(res.out)["report"]["package"])


def _manifest(path: Path) -> mf.Manifest:
    from flsilo.format.artifact import scan_file

    return scan_file(path).manifest


@pytest.fixture(scope="module")
def frozen_fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("frozen") / "fed"
    return build_federation(root, "periodic:2", MLP, ("--freeze", "1.*"))


def test_partial_bundle_carries_only_trainable_tensors(frozen_fed: Federation, cli, tmp_path):
    fed = frozen_fed.copy(tmp_path / "fed")
    bundle = load_file(str(fed.bundles["site-a"]))
    assert sorted(bundle) == ["3.bias", "3.weight"]
    package0 = load_file(str(fed.hub / "packages" / "fed-r0000.safetensors"))
    assert sorted(package0) == ["1.bias", "1.weight", "3.bias", "3.weight"]
    assert _manifest(fed.hub / "packages" / "fed-r0000.safetensors").model.head == (
        "3.weight",
        "3.bias",
    )
    package1 = load_file(str(_aggregate(cli, fed)))
    assert sorted(package1) == sorted(package0)
    for name in ("1.weight", "1.bias"):  # the frozen backbone is copied from the round's package
        assert np.array_equal(package1[name], package0[name])
    weights = {"site-a": 270, "site-b": 180}  # samples after the 10% validation hold-out
    bundles = {s: load_file(str(b)) for s, b in fed.bundles.items()}
    expected = sum(weights[s] * bundles[s]["3.weight"].astype(np.float64) for s in weights) / 450
    assert np.allclose(package1["3.weight"], expected, atol=1e-6)
    assert not np.array_equal(package1["3.weight"], package0["3.weight"])
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out


def test_hub_refuses_a_whole_bundle_when_the_plan_freezes(frozen_fed: Federation, cli, tmp_path):
    fed = frozen_fed.copy(tmp_path / "fed")
    real = fed.bundles["site-a"]
    m = _manifest(real)
    assert m.bundle is not None
    # the site claims a plan without freezing and ships the whole model: the hub's plan rules
    from dataclasses import replace

    forged = replace(m, bundle=replace(m.bundle, plan=replace(m.bundle.plan, freeze=())))
    tensors = {
        k: RawTensor.from_numpy(v)
        for k, v in load_file(str(fed.hub / "packages" / "fed-r0000.safetensors")).items()
    }
    real.unlink()
    write_artifact(real, tensors, forged, load_private_key(fed.keys / "site-a", None))
    fed.carry()
    res = cli("aggregate", fed.hub, "--min-sites", "1", "--json")
    assert res.code == 0, res.err
    rows = {r["site"]: r for r in json.loads(res.out)["report"]["rows"]}
    assert rows["site-a"]["code"] == "wrong-tensors"
    assert rows["site-b"]["verdict"] == "accepted"


def test_freeze_glob_matching_nothing_is_a_usage_error(cli, tmp_path):
    from tests.conftest import make_key

    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", MLP,
        "--classes", "a,b", "--input-shape", "4", "--key", key, "--freeze", "backbone.*",
    )  # fmt: skip
    assert res.code == 2
    assert "bad-freeze" in res.err and "backbone.*" in res.err
    assert not (tmp_path / "hub").exists()


def _pooled_features(fed: Federation, package: Path) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from flsilo.models.registry import build_model, head_features

    model = build_model(MLP, (1, 8, 8), 10)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(str(package)).items()})
    model.eval()
    xs, ys = [], []
    for site in ("site-a", "site-b"):
        data = np.load(fed.data[site])
        xs.append(data["x"])
        ys.append(data["y"])
    x = torch.from_numpy(np.concatenate(xs))
    with torch.no_grad():
        features = head_features(model, x).double().numpy()
    return features, np.concatenate(ys)


def _statistics_fed(root: Path, *extra: str) -> Federation:
    return build_federation(root, "closed-form", MLP, extra)


def test_closed_form_ridge_head_equals_the_pooled_solution(cli, tmp_path, monkeypatch):
    fed = _statistics_fed(tmp_path / "fed", "--head-solver", "ridge:0.5")
    bundle = _manifest(fed.bundles["site-a"])
    assert bundle.bundle is not None
    assert bundle.bundle.num_samples == 300  # every sample: no validation hold-out
    assert "class counts" in bundle.bundle.reveals
    assert sorted(load_file(str(fed.bundles["site-a"]))) == [
        "statistics.class_counts",
        "statistics.class_sums",
        "statistics.gram",
    ]
    package0 = fed.hub / "packages" / "fed-r0000.safetensors"
    final = _aggregate(cli, fed)
    features, labels = _pooled_features(fed, package0)
    n, d = features.shape
    a = np.concatenate([features, np.ones((n, 1))], axis=1)
    onehot = np.eye(10)[labels]
    penalty = np.diag(np.r_[np.full(d, 0.5), 0.0])
    solution = np.linalg.solve(a.T @ a + penalty, a.T @ onehot)
    head = load_file(str(final))
    assert np.allclose(head["3.weight"], solution[:d].T, rtol=1e-4, atol=1e-5)
    assert np.allclose(head["3.bias"], solution[d], rtol=1e-4, atol=1e-5)
    before = load_file(str(package0))
    assert np.array_equal(head["1.weight"], before["1.weight"])
    m = _manifest(final)
    assert m.package is not None and m.package.final and m.package.provenance is not None
    assert m.package.provenance.strategy == "closed-form-ridge"
    assert m.package.provenance.strategy_params["lambda"] == 0.5
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out
    replay = [c for c in json.loads(audit.out)["audit"]["checks"] if c["name"].startswith("replay")]
    assert replay and "bit-identical" in replay[0]["detail"]
    assert _replay_with_offset(cli, fed, monkeypatch, 3e-7) == (0, "within the recorded tolerance")
    assert _replay_with_offset(cli, fed, monkeypatch, 1e-3) == (3, "differ from the package")


def _replay_with_offset(cli, fed: Federation, monkeypatch, offset: float) -> tuple[int, str]:
    """Replay as another machine's numpy might: the solved head off by ``offset``."""
    from hub_kit import closed_form, roundmath

    def shifted(solver, stats, task="classify"):
        weight, bias = closed_form.solve_head(solver, stats, task)
        return weight + offset, bias

    with monkeypatch.context() as patch:
        patch.setattr(roundmath, "solve_head", shifted)
        audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    checks = json.loads(audit.out)["audit"]["checks"]
    replay = next(c for c in checks if c["name"].startswith("replay"))
    detail = next(
        text
        for text in ("within the recorded tolerance", "differ from the package", "bit-identical")
        if text in replay["detail"]
    )
    return audit.code, detail


def test_closed_form_ncm_head_is_the_pooled_class_means(cli, tmp_path):
    fed = _statistics_fed(tmp_path / "fed", "--head-solver", "ncm")
    assert sorted(load_file(str(fed.bundles["site-b"]))) == [
        "statistics.class_counts",
        "statistics.class_sums",
    ]
    package0 = fed.hub / "packages" / "fed-r0000.safetensors"
    fed.carry()  # a statistics round has no update direction: no cosines, nothing gated
    res = cli("aggregate", fed.hub, "--json", "--cosine-gate", "0.9")
    assert res.code == 0, res.err
    report = json.loads(res.out)["report"]
    assert [r["cosine"] for r in report["rows"]] == [None, None]
    head = load_file(report["package"])
    features, labels = _pooled_features(fed, package0)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(10)])
    assert np.allclose(head["3.weight"], means, rtol=1e-5, atol=1e-6)
    assert np.allclose(head["3.bias"], -0.5 * (means**2).sum(axis=1), rtol=1e-5, atol=1e-5)


def test_site_refuses_a_statistics_round_below_the_minimum_cell_size(cli, tmp_path):
    with pytest.raises(AssertionError):  # build_federation asserts every train exits 0
        _statistics_fed(tmp_path / "fed", "--min-cell-size", "40")
    site = tmp_path / "fed" / "site-a"  # 300 samples over 10 classes: some class has < 40
    res = cli("train", site / "packages" / "fed-r0000.safetensors", "--site", site)
    assert res.code == 3
    assert "cell-too-small" in res.err and "minimum cell size is 40" in res.err
    assert not list((site / "outbox").glob("*.safetensors"))


def test_closed_form_then_periodic_fine_tunes_the_head(cli, tmp_path):
    fed = build_federation(
        tmp_path / "fed", "closed-form+periodic:1", MLP, ("--freeze", "1.*", "--min-cell-size", "5")
    )
    package1 = _aggregate(cli, fed)
    m = _manifest(package1)
    assert m.package is not None and not m.package.final
    assert m.package.plan is not None and m.package.plan.kind == "train"
    for site, site_dir in fed.sites.items():
        shutil.copy(package1, site_dir / "inbox.safetensors")
        shutil.copy(f"{package1}.sig", site_dir / "inbox.safetensors.sig")
        res = cli("train", site_dir / "inbox.safetensors", "--site", site_dir, "--device", "cpu")
        assert res.code == 0, res.err
        fed.bundles[site] = site_dir / "outbox" / f"fed-r0001-{site}.safetensors"
        assert sorted(load_file(str(fed.bundles[site]))) == ["3.bias", "3.weight"]
    final = _aggregate(cli, fed)
    assert _manifest(final).package.final  # type: ignore[union-attr]
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out


def test_simulate_runs_a_closed_form_schedule_on_a_frozen_backbone(cli) -> None:
    result = cli(
        "simulate", "--sites", "3", "--partition", "shards:2", "--model", MLP,
        "--schedule", "closed-form+periodic:1", "--freeze", "1.*", "--pretrain-fraction", "0.2",
        "--pretrain-epochs", "3", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    run = json.loads(result.out)["runs"][0]
    assert run["rounds"] == 2 and len(run["accuracy"]) == 3
    # three sites holding two digits each: the solved head is the pooled ridge solution,
    # far above a head trained on any one site's two digits
    assert run["accuracy"][1] > 0.6 > max(run["local_only"].values())


def _forge_counts(fed: Federation, site: str, counts: np.ndarray) -> None:
    """Re-sign site's statistics bundle with other class counts (a site lying about them)."""
    path = fed.bundles[site]
    tensors = {k: RawTensor.from_numpy(v) for k, v in load_file(str(path)).items()}
    tensors["statistics.class_counts"] = RawTensor.from_numpy(counts.astype(np.float64))
    m = _manifest(path)
    path.unlink()
    write_artifact(path, tensors, m, load_private_key(fed.keys / site, None))


def test_hub_checks_the_class_counts_of_statistics_bundles(cli, tmp_path):
    fed = _statistics_fed(tmp_path / "fed", "--min-cell-size", "5")
    counts = load_file(str(fed.bundles["site-a"]))["statistics.class_counts"]
    small = counts.copy()
    small[0], small[1] = 2.0, small[1] + small[0] - 2.0  # same total, one class of 2 samples
    _forge_counts(fed, "site-a", small)
    wrong_total = load_file(str(fed.bundles["site-b"]))["statistics.class_counts"] + 1.0
    _forge_counts(fed, "site-b", wrong_total)
    fed.carry()
    res = cli("aggregate", fed.hub, "--min-sites", "1", "--json")
    assert res.code == 1  # nothing left to aggregate
    rows = {r["site"]: r for r in json.loads(res.out)["report"]["rows"]}
    assert rows["site-a"]["code"] == "cell-too-small"
    assert rows["site-b"]["code"] == "bad-statistics"
