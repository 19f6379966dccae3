"""Low-rank adapters (FFA-LoRA) through the real files: hub init, train, aggregate, export.

``mlp:hidden=16`` has layers ``1`` (64 -> 16) and ``3`` (the head, 16 -> 10); with
``--adapters lora:r=4`` the package adds ``1.lora_A.weight`` (4 x 64, fixed) and
``1.lora_B.weight`` (16 x 4, zero), and bundles carry ``1.lora_B.weight`` and the head only.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flsilo.format import manifest as mf
from tests.conftest import Federation, build_federation, digits_npz, hub_root, make_key

MLP = "mlp:hidden=16"
LORA = ("--adapters", "lora:r=4,alpha=8")  # scale alpha / r = 2
SCALE = 2.0
WEIGHTS = {"site-a": 270.0, "site-b": 180.0}  # samples after the 10% validation hold-out


@pytest.fixture(scope="module")
def lora_fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return build_federation(tmp_path_factory.mktemp("lora") / "fed", "periodic:2", MLP, LORA)


def _aggregate(cli, fed: Federation, *args: str) -> Path:
    fed.carry()
    res = cli("aggregate", fed.hub, "--json", *args)
    assert res.code == 0, res.err
    return Path(json.loads(res.out)["report"]["package"])


def _package0(fed: Federation) -> Path:
    return fed.hub / "packages" / "fed-r0000.safetensors"


def _merged_update(tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The adapter's update of layer 1's weight, (alpha / r) B A, in float64."""
    b = tensors["1.lora_B.weight"].astype(np.float64)
    a = tensors["1.lora_A.weight"].astype(np.float64)
    return SCALE * b @ a


def test_package_holds_fixed_a_and_zero_b_and_bundles_only_b_and_head(lora_fed: Federation):
    from flsilo.format.artifact import scan_file

    package0 = load_file(str(_package0(lora_fed)))
    assert sorted(package0) == [
        "1.bias", "1.lora_A.weight", "1.lora_B.weight", "1.weight", "3.bias", "3.weight",
    ]  # fmt: skip
    assert (
        package0["1.lora_A.weight"].shape == (4, 64) and np.abs(package0["1.lora_A.weight"]).sum()
    )
    assert package0["1.lora_B.weight"].shape == (16, 4) and not package0["1.lora_B.weight"].any()
    manifest = scan_file(_package0(lora_fed)).manifest
    assert manifest.model.adapters == "lora:r=4,alpha=8" and manifest.model.head == (
        "3.weight",
        "3.bias",
    )
    assert manifest.package is not None and manifest.package.plan is not None
    assert manifest.package.plan.adapters == "lora:r=4,alpha=8"
    for bundle in lora_fed.bundles.values():
        assert sorted(load_file(str(bundle))) == ["1.lora_B.weight", "3.bias", "3.weight"]


@pytest.mark.parametrize(
    ("args", "weights"),
    [
        ((), WEIGHTS),
        (("--strategy", "mean"), {"site-a": 1.0, "site-b": 1.0}),
        (("--server-optimizer", "fedavgm", "--server-lr", "1"), WEIGHTS),
    ],
    ids=["fedavg", "mean", "fedavgm"],
)
def test_average_of_b_is_exactly_the_average_of_updates(lora_fed, cli, tmp_path, args, weights):
    fed = lora_fed.copy(tmp_path / "fed")
    package0 = load_file(str(_package0(fed)))
    bundles = {s: load_file(str(b)) for s, b in fed.bundles.items()}
    package1 = load_file(str(_aggregate(cli, fed, *args)))
    total = sum(weights.values())
    # the B the hub wrote is the rule's average of the sites' B (all started from zero)
    mean_b = sum(weights[s] * bundles[s]["1.lora_B.weight"].astype(np.float64) for s in weights)
    assert np.array_equal(package1["1.lora_B.weight"], (mean_b / total).astype(np.float32))
    # A is fixed, so the update that B makes is the same average of the sites' updates
    updates = {s: _merged_update(bundles[s] | {"1.lora_A.weight": package0["1.lora_A.weight"]})
               for s in weights}  # fmt: skip
    mean_update = sum(weights[s] * updates[s] for s in weights) / total
    got = _merged_update(package1)
    assert np.abs(mean_update).max() > 1e-3
    assert np.allclose(got, mean_update, rtol=1e-6, atol=1e-9)
    # the frozen base and A are copied from the round's package, bit for bit
    for name in ("1.weight", "1.bias", "1.lora_A.weight"):
        assert np.array_equal(package1[name], package0[name])
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out


def test_the_merged_model_answers_as_the_adapters_do_and_evaluate_uses_it(lora_fed, cli, tmp_path):
    """The default tier's twin of the export test below: the model export and evaluate build
    (adapters merged into plain weights) answers as the package's model with its adapters
    attached."""
    import torch

    from flsilo.format.artifact import verify_file
    from flsilo.models.adapters import apply_package_adapters
    from flsilo.models.registry import build_model
    from flsilo.signing.trust import AllowedSigners
    from site_kit.packagemodel import verified_model

    fed = lora_fed.copy(tmp_path / "fed")
    package = _aggregate(cli, fed)
    tensors = load_file(str(package))
    buffer = io.BytesIO()
    verified = verify_file(
        package, AllowedSigners.load(fed.hub / "allowed_signers"), copy_to=buffer
    )
    merged = verified_model(verified, buffer.getvalue(), merged=True).eval()
    assert not any("lora" in name for name in merged.state_dict())  # one weight per layer
    model = build_model(MLP, (1, 8, 8), 10)
    apply_package_adapters(model, "lora:r=4,alpha=8", tensors)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((7, 1, 8, 8)).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(merged(x), model.eval()(x), atol=1e-5)
    few = digits_npz(tmp_path / "few.npz", np.arange(1700, 1740))  # the model, not the figures
    ev = cli("evaluate", package, "--hub", fed.hub, "--data", few, "--json")
    assert ev.code == 0, ev.err
    assert 0.0 <= json.loads(ev.out)["accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.usefixtures("onnx_registry_once")
def test_export_and_evaluate_merge_the_adapters(lora_fed, cli, tmp_path):
    onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    import torch

    from flsilo.models.adapters import apply_package_adapters
    from flsilo.models.registry import build_model

    fed = lora_fed.copy(tmp_path / "fed")
    package = _aggregate(cli, fed)
    tensors = load_file(str(package))
    out = tmp_path / "model.onnx"
    res = cli("export", package, "--hub", fed.hub, "--out", out, "--json")
    assert res.code == 0, res.err
    names = {i.name for i in onnx.load(out).graph.initializer}
    assert not any("lora" in n for n in names)  # one plain weight per layer: merged
    # the ONNX model answers as the package's model with its adapters attached (unmerged)
    model = build_model(MLP, (1, 8, 8), 10)
    apply_package_adapters(model, "lora:r=4,alpha=8", tensors)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    x = np.random.default_rng(1).standard_normal((7, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"input": x})[0], want, atol=1e-5)
    few = digits_npz(tmp_path / "few.npz", np.arange(1700, 1740))  # the model, not the figures
    ev = cli("evaluate", package, "--hub", fed.hub, "--data", few, "--json")
    assert ev.code == 0, ev.err
    assert 0.0 <= json.loads(ev.out)["accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("lora:r=0", "positive"),
        ("lora:r=2.5", "whole number"),
        ("lora:alpha=4", "r=R"),
        ("dora:r=4", "not one of lora"),
        ("lora:r=4,targets=backbone.*", "'backbone.*' matches no"),
        ("lora:r=4,targets=3", "'3' matches no"),  # the head is never a target
    ],
)
def test_bad_adapters_are_one_line_and_create_nothing(cli, tmp_path, value, why):
    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", MLP,
        "--classes", "a,b", "--input-shape", "4", "--key", key, "--adapters", value,
    )  # fmt: skip
    assert res.code == 2, res.err
    assert "error[bad-adapters]" in res.err and why in res.err and "hint:" in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "hub").exists()


def test_closed_form_head_is_solved_on_the_base_before_adapters_train(cli, tmp_path):
    fed = build_federation(tmp_path / "fed", "closed-form+periodic:1", MLP, LORA)
    package0 = load_file(str(_package0(fed)))
    package1 = load_file(str(_aggregate(cli, fed)))
    assert not np.array_equal(package1["3.weight"], package0["3.weight"])  # head solved
    for name in ("1.weight", "1.lora_A.weight", "1.lora_B.weight"):  # B still zero: the base's
        assert np.array_equal(package1[name], package0[name])
    site = fed.sites["site-a"]
    res = cli("train", package1 := fed.hub / "packages" / "fed-r0001.safetensors", "--site", site)
    assert res.code == 0, res.err
    bundle = site / "outbox" / "fed-r0001-site-a.safetensors"
    trained = load_file(str(bundle))
    assert sorted(trained) == ["1.lora_B.weight", "3.bias", "3.weight"]
    assert np.abs(trained["1.lora_B.weight"]).max() > 0
    assert package1.exists()


def test_dp_federation_trains_adapters_and_head_only(cli, tmp_path):
    pytest.importorskip("opacus", reason="the dp extra is not installed")
    from flsilo.format.artifact import scan_file

    fed = build_federation(
        tmp_path / "fed", "periodic:1", MLP,
        (*LORA, "--dp-noise-multiplier", "1.0", "--dp-budget", "50"),
    )  # fmt: skip
    bundle = fed.bundles["site-a"]
    assert sorted(load_file(str(bundle))) == ["1.lora_B.weight", "3.bias", "3.weight"]
    info = scan_file(bundle).manifest.bundle
    assert info is not None and info.dp is not None and info.dp.steps > 0
    final = _aggregate(cli, fed)
    assert load_file(str(final))["1.lora_B.weight"].any()


def test_a_site_refuses_adapters_it_cannot_apply(lora_fed, tmp_path):
    import io

    from flsilo.format.artifact import verify_file
    from flsilo.runtime.codes import Code
    from flsilo.runtime.errors import PolicyError
    from flsilo.signing.trust import AllowedSigners
    from site_kit.packagemodel import verified_model

    fed = lora_fed.copy(tmp_path / "fed")
    buffer = io.BytesIO()
    verified = verify_file(
        _package0(fed), AllowedSigners.load(fed.hub / "allowed_signers"), copy_to=buffer
    )
    for adapters, why in (("dora:r=4", "dora"), ("lora:r=4,alpha=8", "no layer '9'")):
        m = verified.manifest
        data = buffer.getvalue()
        if adapters.startswith("lora"):  # a package naming a layer this model does not have
            data = data.replace(b"1.lora_A.weight", b"9.lora_A.weight")
        model = replace(m.model, adapters=adapters)
        forged = replace(verified, scan=replace(verified.scan, manifest=replace(m, model=model)))
        with pytest.raises(PolicyError) as caught:
            verified_model(forged, data)
        assert caught.value.code == Code.ADAPTERS_UNSUPPORTED and why in str(caught.value)


def test_manifest_without_adapters_keeps_its_bytes():
    """A plan or model without adapters writes no adapters field (older files' bytes)."""
    plan = mf.Plan(local_epochs=1, batch_size=8)
    assert "adapters" not in mf.to_jsonable(plan)
    assert mf.to_jsonable(replace(plan, adapters="lora:r=2"))["adapters"] == "lora:r=2"


def test_a_reviewed_plan_file_sets_adapters(cli, tmp_path):
    import tomllib

    from flsilo.format.artifact import scan_file

    printed = cli("hub", "init", "--print-config").out
    assert 'adapters = ""' in printed  # offered, empty, with its help above it
    plan = tmp_path / "plan.toml"
    plan.write_text(
        printed.replace('adapters = ""', 'adapters = "lora:r=2"').replace(
            'federation = "my-federation"', 'federation = "fed"'
        )
    )
    key = make_key(tmp_path / "hub-key")
    made = cli("hub", "init", tmp_path / "hub", "--config", plan, "--key", key)
    assert made.code == 0, made.err
    written = tomllib.loads((tmp_path / "hub" / "federation.toml").read_text())
    assert written["plan"]["adapters"] == "lora:r=2"
    package = next((tmp_path / "hub" / "packages").glob("*-r0000.safetensors"))
    assert scan_file(package).manifest.model.adapters == "lora:r=2"


def test_evaluate_refuses_a_signed_package_whose_adapters_it_cannot_apply(lora_fed, cli, tmp_path):
    from flsilo.format.artifact import scan_file, write_artifact
    from flsilo.format.tensorfile import RawTensor
    from flsilo.signing.keys import load_private_key

    fed = lora_fed.copy(tmp_path / "fed")
    m = scan_file(_package0(fed)).manifest
    assert m.package is not None and m.package.plan is not None
    plan = replace(m.package.plan, adapters="dora:r=4")  # a kind a newer flsilo might write
    forged = replace(
        m,
        model=replace(m.model, adapters="dora:r=4"),
        package=replace(m.package, plan=plan),
    )
    tensors = {k: RawTensor.from_numpy(v) for k, v in load_file(str(_package0(fed))).items()}
    out = tmp_path / "fed-r0000.safetensors"
    write_artifact(out, tensors, forged, load_private_key(fed.keys / "hub", None))
    res = cli("evaluate", out, "--hub", fed.hub, "--data", fed.data["site-a"])
    assert res.code == 3, res.err
    assert "error[adapters-unsupported]" in res.err and "dora" in res.err and "hint:" in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_a_freeze_that_leaves_neither_b_nor_the_head_to_train_is_refused(cli, tmp_path):
    """With adapters only B and the head train: freezing both leaves nothing (a site's
    optimizer would get no parameter), refused at hub init like any freeze of everything."""
    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", MLP,
        "--classes", "a,b", "--input-shape", "4", "--key", key, *LORA,
        "--freeze", "*.lora_B.weight,3.*",
    )  # fmt: skip
    assert res.code == 2, res.err
    assert "error[bad-freeze]" in res.err and "leaves no tensor to train" in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "hub").exists()


@pytest.mark.parametrize("extra", ["1.lora_A.weight", "1.weight"], ids=["a", "base"])
def test_the_hub_refuses_a_bundle_that_carries_a_or_a_base_tensor(lora_fed, cli, tmp_path, extra):
    """A site that signs a bundle changing A (or the frozen base) beside B and the head is
    refused as wrong-tensors: the next package's A and base come from the package alone."""
    from flsilo.format.artifact import scan_file, write_artifact
    from flsilo.format.tensorfile import RawTensor
    from flsilo.signing.keys import load_private_key

    fed = lora_fed.copy(tmp_path / "fed")
    bundle = fed.bundles["site-a"]
    tensors = {k: RawTensor.from_numpy(v) for k, v in load_file(str(bundle)).items()}
    changed = load_file(str(_package0(fed)))[extra] * 5
    tensors[extra] = RawTensor.from_numpy(changed)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    key = load_private_key(fed.keys / "site-a", None)
    write_artifact(inbox / bundle.name, tensors, scan_file(bundle).manifest, key)
    res = cli("aggregate", fed.hub, "--inbox", inbox, "--json")
    assert res.code != 0
    (row,) = json.loads(res.out)["report"]["rows"]
    assert row["verdict"] == "rejected" and row["code"] == "wrong-tensors", row
    assert "trainable tensors" in row["reason"]
