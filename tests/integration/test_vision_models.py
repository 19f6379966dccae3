"""torchvision:NAME and timm:NAME model specs through the real files (the vision tier).

Run in the environment of constraints-vision.txt (.ci/run builds it): torch 2.14.1,
torchvision 0.29.1 and timm. Images are the handwritten digits, upscaled to 3x16x16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flsilo.cli.app import run
from flsilo.format import manifest as mf
from flsilo.format.artifact import scan_file, write_artifact
from flsilo.format.tensorfile import RawTensor
from flsilo.signing.keys import load_private_key
from tests.conftest import Federation, fingerprint, hub_root, make_key

pytestmark = pytest.mark.vision
REASON = "runs in the vision tier, whose environment (constraints-vision.txt) has it"
torchvision = pytest.importorskip("torchvision", reason=REASON)
timm = pytest.importorskip("timm", reason=REASON)

SHAPE = (3, 16, 16)
DIGITS = ",".join(str(d) for d in range(10))
RESNET18 = "torchvision:resnet18"
RESNET18_BACKBONE = "conv1.*,bn1.*,layer*"


def _images(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sim_kit.datasets import load_digits

    x, y = load_digits()
    x = x[indices].reshape(-1, 1, 8, 8)
    x = np.kron(x, np.ones((1, 1, 2, 2), dtype=x.dtype))  # 16x16
    return np.repeat(x, 3, axis=1).astype(np.float32), y[indices]


def vision_federation(
    root: Path, model: str, schedule: str, *extra: str, train: bool = True
) -> Federation:
    """A hub with two enrolled sites that have each trained round 0 on 3x16x16 digits."""
    root.mkdir(parents=True)
    keys = root / "keys"
    for name in ("hub", "site-a", "site-b"):
        make_key(keys / name)
    hub = root / "hub"
    init = ["hub", "init", str(hub), "--federation", "fed", "--model", model,
            "--classes", DIGITS, "--input-shape", ",".join(map(str, SHAPE)),
            "--key", str(keys / "hub"), "--schedule", schedule, "--local-epochs", "1",
            "--batch-size", "32", "--lr", "0.05", "--min-sites", "2", *extra]  # fmt: skip
    assert run(init) == 0
    order = np.random.default_rng(0).permutation(1797)
    data, sites, bundles = {}, {}, {}
    for site, part in (("site-a", order[:160]), ("site-b", order[160:260])):
        x, y = _images(part)
        data[site] = root / f"{site}.npz"
        np.savez(data[site], x=x, y=y)
        pub = keys / f"{site}.pub"
        assert (
            run(["hub", "enroll", str(hub), site, str(pub), "--fingerprint", fingerprint(pub)]) == 0
        )
        kit = root / f"kit-{site}"
        assert run(["hub", "kit", str(hub), site, "--out", str(kit)]) == 0
        sites[site] = root / site
        assert run(["site", "init", str(sites[site]), "--kit", str(kit), "--site-id", site,
                    "--key", str(keys / site), "--hub-fingerprint", fingerprint(keys / "hub.pub"),
                    "--data", str(data[site])]) == 0  # fmt: skip
        package = sites[site] / "packages" / "fed-r0000.safetensors"
        assert (
            not train
            or run(["train", str(package), "--site", str(sites[site]), "--device", "cpu"]) == 0
        )
        bundles[site] = sites[site] / "outbox" / f"fed-r0000-{site}.safetensors"
    return Federation(root, hub, keys, sites, bundles, data)


def _aggregate(cli, fed: Federation) -> Path:
    fed.carry()
    res = cli("aggregate", fed.hub, "--json")
    assert res.code == 0, res.err
    return Path(json.loads(res.out)["report"]["package"])


def _model_info(path: Path) -> mf.ModelInfo:
    return scan_file(path).manifest.model


def _public(version: str) -> str:
    return version.split("+")[0]


def test_torchvision_spec_trains_aggregates_and_replays(cli, tmp_path):
    fed = vision_federation(tmp_path / "fed", RESNET18, "periodic:2")
    package0 = fed.hub / "packages" / "fed-r0000.safetensors"
    info = _model_info(package0)
    assert info.spec == RESNET18
    assert info.code_digest == f"torchvision=={_public(torchvision.__version__)}:resnet18"
    assert info.head == ("fc.weight", "fc.bias")
    shown = cli("inspect", package0)
    assert shown.code == 0 and info.code_digest in shown.out
    start = load_file(str(package0))
    assert start["fc.weight"].shape == (10, 512)
    package1 = _aggregate(cli, fed)
    # BatchNorm that trains: its running statistics are averaged like weights, by samples
    bundles = {s: scan_file(b).manifest for s, b in fed.bundles.items()}
    counts = {s: m.bundle.num_samples for s, m in bundles.items() if m.bundle is not None}
    tensors = {s: load_file(str(b)) for s, b in fed.bundles.items()}
    name = "layer1.0.bn1.running_mean"
    expected = sum(counts[s] * tensors[s][name].astype(np.float64) for s in counts)
    expected /= sum(counts.values())
    merged = load_file(str(package1))
    assert np.allclose(merged[name], expected, atol=1e-6)
    assert not np.array_equal(merged[name], start[name])
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out


def test_timm_spec_trains_aggregates_and_replays(cli, tmp_path):
    spec = "timm:resnet10t:norm=group,norm_groups=8"
    fed = vision_federation(tmp_path / "fed", spec, "periodic:2")
    package0 = fed.hub / "packages" / "fed-r0000.safetensors"
    info = _model_info(package0)
    assert info.code_digest == f"timm=={_public(timm.__version__)}:resnet10t"
    assert info.head == ("fc.weight", "fc.bias")
    assert not any("running_mean" in k for k in load_file(str(package0)))  # GroupNorm only
    package1 = _aggregate(cli, fed)
    assert scan_file(package1).manifest.round == 1
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out


def _pooled_features(fed: Federation, package: Path) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from flsilo.models.registry import build_model, head_features

    model = build_model(RESNET18, SHAPE, 10)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(str(package)).items()})
    model.eval()
    xs, ys = zip(*(np.load(fed.data[s]).values() for s in ("site-a", "site-b")), strict=True)
    with torch.no_grad():
        features = head_features(model, torch.from_numpy(np.concatenate(xs)))
    return features.double().numpy(), np.concatenate(ys)


def test_closed_form_head_on_a_frozen_torchvision_backbone_is_the_pooled_solution(cli, tmp_path):
    fed = vision_federation(
        tmp_path / "fed", RESNET18, "closed-form", "--freeze", RESNET18_BACKBONE,
        "--head-solver", "ridge:0.5",
    )  # fmt: skip
    package0 = fed.hub / "packages" / "fed-r0000.safetensors"
    final = _aggregate(cli, fed)
    features, labels = _pooled_features(fed, package0)
    n, d = features.shape
    assert d == 512
    a = np.concatenate([features, np.ones((n, 1))], axis=1)
    penalty = np.diag(np.r_[np.full(d, 0.5), 0.0])
    solution = np.linalg.solve(a.T @ a + penalty, a.T @ np.eye(10)[labels])
    head = load_file(str(final))
    assert np.allclose(head["fc.weight"], solution[:d].T, rtol=1e-4, atol=1e-5)
    assert np.allclose(head["fc.bias"], solution[d], rtol=1e-4, atol=1e-5)
    before = load_file(str(package0))
    assert np.array_equal(head["bn1.running_mean"], before["bn1.running_mean"])
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out


def test_frozen_backbone_keeps_its_batchnorm_statistics_and_ships_only_the_head(cli, tmp_path):
    fed = vision_federation(tmp_path / "fed", RESNET18, "periodic:2", "--freeze", RESNET18_BACKBONE)
    for bundle in fed.bundles.values():
        assert sorted(load_file(str(bundle))) == ["fc.bias", "fc.weight"]
    before = load_file(str(fed.hub / "packages" / "fed-r0000.safetensors"))
    after = load_file(str(_aggregate(cli, fed)))
    for name in before:
        if not name.startswith("fc."):
            assert np.array_equal(after[name], before[name]), name


def test_site_with_another_library_version_refuses(cli, tmp_path):
    fed = vision_federation(tmp_path / "fed", RESNET18, "periodic:2", train=False)
    package = fed.hub / "packages" / "fed-r0000.safetensors"
    m = scan_file(package).manifest
    from dataclasses import replace

    other = replace(m, model=replace(m.model, code_digest="torchvision==0.20.0:resnet18"))
    forged = tmp_path / "fed-r0000.safetensors"
    tensors = {k: RawTensor.from_numpy(v) for k, v in load_file(str(package)).items()}
    write_artifact(forged, tensors, other, load_private_key(fed.keys / "hub", None))
    res = cli("train", forged, "--site", fed.sites["site-a"], "--device", "cpu")
    assert res.code == 3, res.err
    assert "error[model-code-mismatch]" in res.err
    assert "the package was built with 0.20.0" in res.err and "torchvision==0.20.0" in res.err
    assert len(res.err.strip().splitlines()) <= 2


@pytest.mark.parametrize(
    ("spec", "close"),
    [("torchvision:resnet81", "resnet18"), ("timm:convnext_atto_x", "convnext_atto")],
)
def test_unknown_model_name_is_one_line_with_close_names(cli, tmp_path, spec, close):
    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", spec,
        "--classes", "a,b", "--input-shape", "3,16,16", "--key", key,
    )  # fmt: skip
    assert res.code == 2
    assert "error[bad-model-spec]" in res.err and "close names" in res.err and close in res.err
    assert "Traceback" not in res.err
    assert not (tmp_path / "hub").exists()


def test_dp_refuses_torchvision_batchnorm_unless_replaced_or_frozen(cli, tmp_path):
    key = make_key(tmp_path / "hub-key")
    dp = ("--dp-noise-multiplier", "1", "--dp-budget", "3")

    def init(name: str, spec: str, *extra: str):
        return cli(
            "hub", "init", tmp_path / name, "--federation", "f", "--model", spec,
            "--classes", "a,b", "--input-shape", "3,16,16", "--key", key, *dp, *extra,
        )  # fmt: skip

    refused = init("h1", RESNET18)
    assert refused.code == 2 and "error[dp-batchnorm]" in refused.err
    assert init("h2", f"{RESNET18}:norm=group").code == 0
    assert init("h3", RESNET18, "--freeze", RESNET18_BACKBONE).code == 0
