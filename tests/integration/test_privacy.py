"""Differential privacy end to end: the plan, DP-SGD at the site, the ledger, the hub's gates."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flsilo.format import manifest as mf
from flsilo.format.artifact import scan_file
from flsilo.plans.plan import Plan
from flsilo.runtime.errors import PolicyError
from tests.conftest import Federation, build_federation, make_key, needs

pytestmark = needs("opacus", reason="DP tests need the 'dp' extra (Opacus)")

DIGITS = ",".join(str(d) for d in range(10))
# One round at epsilon 1 fits the budget; a second composes to about 1.4 and does not.
DP_OPTIONS = ("--dp-epsilon", "1", "--dp-budget", "1.2", "--dp-clip", "1", "--local-epochs", "2")


def hub_init(cli, tmp_path: Path, *extra: object):
    if not (tmp_path / "hub").exists():
        make_key(tmp_path / "hub")
    return cli(
        "hub",
        "init",
        tmp_path / "h",
        "--federation",
        "fed",
        "--model",
        "logreg",
        "--classes",
        DIGITS,
        "--input-shape",
        "1,8,8",
        "--key",
        tmp_path / "hub",
        *extra,
    )


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--dp-epsilon", "1"], "--dp-budget EPS_TOTAL"),
        (["--dp-budget", "2"], "needs a DP mechanism"),
        (["--dp-epsilon", "1", "--dp-noise-multiplier", "1", "--dp-budget", "3"], "not both"),
        (["--dp-epsilon", "4", "--dp-budget", "3"], "exceeds --dp-budget"),
        (["--dp-noise-multiplier", "1", "--dp-budget", "3", "--dp-delta", "2"], "--dp-delta"),
        (["--dp-noise-multiplier", "1", "--dp-budget", "3", "--fedprox-mu", "0.1"], "fedprox"),
    ],
)
def test_hub_init_refuses_an_unusable_dp_plan(cli, tmp_path: Path, options, needle) -> None:
    result = hub_init(cli, tmp_path, *options)
    assert result.code == 2, result.err
    assert needle in result.err and "error[bad-config]" in result.err
    assert not (tmp_path / "h").exists()


def test_a_dp_federation_refuses_statistics_rounds(cli, tmp_path: Path) -> None:
    dp = ("--dp-noise-multiplier", "1", "--dp-budget", "3")
    result = hub_init(cli, tmp_path, "--schedule", "closed-form", *dp)
    assert result.code == 2 and "error[dp-plan]" in result.err and "statistics" in result.err
    assert not (tmp_path / "h").exists()
    statistics = Plan(local_epochs=1, batch_size=8, kind="statistics", dp_epsilon=1, dp_budget=3)
    from flsilo.plans.plan import plan_problem

    assert "statistics" in (plan_problem(statistics) or "")


def test_hub_init_refuses_a_batchnorm_model(cli, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "bnmodel.py").write_text(
        "from torch import nn\n"
        "def build(shape, n):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, n))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ("--model", "bnmodel:build")
    result = hub_init(cli, tmp_path, *spec, "--dp-noise-multiplier", "1", "--dp-budget", "3")
    assert result.code == 2 and "BatchNorm1d" in result.err and "GroupNorm" in result.err
    assert hub_init(cli, tmp_path, *spec).code == 0  # without DP the model is fine


def test_accountant_composes_rounds_rather_than_adding_them() -> None:
    from site_kit.privacy import epsilon, plan_spend

    plan = Plan(local_epochs=2, batch_size=32, dp_epsilon=1, dp_budget=3)
    one = plan_spend(plan, 300)
    assert one.sample_rate == pytest.approx(32 / 300) and one.steps == 20
    single = epsilon([one], 1e-5)
    assert 0.95 < single <= 1.0  # the derived noise meets the per-round target
    two = epsilon([one, one], 1e-5)
    assert single < two < 2 * single
    # the same epsilon costs a small site far more noise than a large one (each noise is an
    # accountant's search: the 300-sample site above is the small one)
    large = plan_spend(plan, 10_000)
    assert one.noise_multiplier > 2 * large.noise_multiplier
    assert 0.95 < epsilon([large], 1e-5) <= 1.0


def test_a_round_past_the_budget_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    from site_kit.privacy import LEDGER_FILE, Ledger, epsilon, plan_spend, prepare_round

    plan = Plan(local_epochs=1, batch_size=16, dp_noise_multiplier=1.0, dp_budget=100)
    spend = plan_spend(plan, 200)
    two, three = epsilon([spend] * 2, 1e-5), epsilon([spend] * 3, 1e-5)
    plan = replace(plan, dp_budget=round((two + three) / 2, 3))
    first = prepare_round(tmp_path, tmp_path / "w0", plan, 200, 0, "a" * 64)
    assert first.entry is not None and first.entry.rounds == 1
    again = prepare_round(tmp_path, tmp_path / "w0", plan, 200, 0, "a" * 64)  # rerun: same entry
    assert again.entry == first.entry and again.secret == first.secret
    assert len(Ledger.open(tmp_path).entries) == 1
    second = prepare_round(tmp_path, tmp_path / "w1", plan, 200, 1, "b" * 64)
    assert second.entry is not None and second.entry.epsilon_total == pytest.approx(two)
    ledger_bytes = (tmp_path / LEDGER_FILE).read_bytes()
    with pytest.raises(PolicyError) as refused:
        prepare_round(tmp_path, tmp_path / "w2", plan, 200, 2, "c" * 64)
    assert refused.value.code == "dp-budget-exceeded" and f"{three:.3f}" in refused.value.message
    assert (tmp_path / LEDGER_FILE).read_bytes() == ledger_bytes
    assert not (tmp_path / "w2").exists()


def test_dp_training_keeps_plain_names_and_leaves_the_model_reusable() -> None:
    import torch

    from flsilo.models.registry import build_model
    from site_kit.data import Dataset
    from site_kit.privacy import DPRun, plan_spend
    from site_kit.training import train

    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(64, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 64))
    plan = Plan(local_epochs=1, batch_size=16, dp_noise_multiplier=1, dp_budget=9)
    model = build_model("mlp:hidden=16", (1, 8, 8), 10)
    names = list(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):  # a second run would fail if Opacus's hooks were left on the model
        run = DPRun(plan_spend(plan, len(data)), b"s" * 32)
        train(model, data, plan, seed=1, device=torch.device("cpu"), dp=run)
    assert list(model.state_dict()) == names
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_dp_training_with_a_frozen_backbone_changes_only_the_head() -> None:
    import torch

    from flsilo.models.registry import build_model
    from site_kit.data import Dataset
    from site_kit.privacy import DPRun, plan_spend
    from site_kit.training import freeze_parameters, train

    rng = np.random.default_rng(1)
    data = Dataset(rng.normal(size=(64, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 64))
    model = build_model("mlp:hidden=16", (1, 8, 8), 10)
    head = list(model.state_dict())[-2:]  # the last Linear's weight and bias
    frozen = freeze_parameters(
        model, tuple(f"{n.rsplit('.', 1)[0]}.*" for n in list(model.state_dict())[:-2])
    )
    plan = Plan(local_epochs=1, batch_size=16, dp_noise_multiplier=1, dp_budget=9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(
        model,
        data,
        plan,
        seed=1,
        device=torch.device("cpu"),
        dp=DPRun(plan_spend(plan, 64), b"k" * 32),
    )
    after = model.state_dict()
    assert frozen and not set(frozen) & set(head)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in head)


# ---------------------------------------------------------------------------------------
# The real pipeline (slow tier)


@pytest.fixture(scope="session")
def dp_template(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return build_federation(tmp_path_factory.mktemp("dp") / "fed", extra=DP_OPTIONS)


@pytest.fixture
def dp_federation(dp_template: Federation, tmp_path: Path) -> Federation:
    return dp_template.copy(tmp_path / "fed")


def _bundle_manifest(path: Path) -> mf.Manifest:
    return scan_file(path).manifest


@pytest.mark.slow
def test_dp_round_trip_reports_and_enforces_the_budget(dp_federation: Federation, cli) -> None:
    fed = dp_federation
    for site, bundle in fed.bundles.items():
        m = _bundle_manifest(bundle)
        assert m.bundle is not None and m.bundle.dp is not None
        assert m.bundle.dp.rounds == 1 and 0 < m.bundle.dp.epsilon_total <= 1.2
        assert m.bundle.dp.accountant == "rdp" and m.bundle.plan.dp_clip == 1
        assert m.bundle.plan.dp_epsilon == 1 and m.bundle.plan.dp_budget == 1.2
        assert not any(t.name.startswith("_module") for t in scan_file(bundle).header.tensors)
        ledger = json.loads((fed.sites[site] / "privacy.json").read_text())
        assert ledger["entries"][0]["epsilon_total"] == m.bundle.dp.epsilon_total
        assert not list((fed.sites[site] / "work").glob("*/dp-seed"))  # secret gone with the round
    fed.carry()
    agg = cli("aggregate", fed.hub)
    assert agg.code == 0, agg.err
    assert "epsilon spent" in agg.err and agg.err.count("of 1.2") == 2
    status = json.loads(cli("hub", "status", fed.hub, "--json").out)
    spent = {s["site"]: s["dp_epsilon_spent"] for s in status["sites"]}
    assert set(spent) == {"site-a", "site-b"} and all(0 < v <= 1.2 for v in spent.values())
    assert status["dp_budget"] == 1.2
    text = cli("hub", "status", fed.hub)
    assert "epsilon spent" in text.out and "of 1.2" in text.out
    assert "differential privacy: epsilon 1 per round, clip 1, delta 1e-05, budget 1.2" in text.out
    kit_readme = (fed.root / "kit-site-a" / "README.txt").read_text()
    assert "'dp' extra" in kit_readme and "privacy.json" in kit_readme

    site = fed.sites["site-a"]
    package = site / "next.safetensors"
    shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors", package)
    shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors.sig", f"{package}.sig")
    ledger_before = (site / "privacy.json").read_bytes()
    outbox_before = sorted(p.name for p in (site / "outbox").iterdir())
    refused = cli("train", package, "--site", site, "--device", "cpu")
    assert refused.code == 3 and "error[dp-budget-exceeded]" in refused.err
    assert "past the federation's budget of 1.2" in refused.err
    assert (site / "privacy.json").read_bytes() == ledger_before
    assert sorted(p.name for p in (site / "outbox").iterdir()) == outbox_before


@pytest.mark.slow
def test_hub_rejects_a_bundle_whose_mechanism_differs(dp_federation: Federation, cli) -> None:
    from flsilo.format.artifact import write_artifact
    from flsilo.format.tensorfile import RawTensor
    from flsilo.signing.keys import load_private_key

    fed = dp_federation
    bundle = fed.bundles["site-a"]
    scan = scan_file(bundle)
    m = scan.manifest
    assert m.bundle is not None and m.bundle.dp is not None
    data = memoryview(bundle.read_bytes())
    start = scan.header.data_start
    raw = {
        t.name: RawTensor(t.dtype, t.shape, data[start + t.begin : start + t.end])
        for t in scan.header.tensors
    }
    plan = m.bundle.plan
    without = replace(plan, dp_epsilon=0.0, dp_budget=0.0)
    forgeries = {
        "weaker": replace(m, bundle=replace(m.bundle, plan=replace(plan, dp_clip=50.0))),
        "none": replace(m, bundle=replace(m.bundle, plan=without, dp=None)),
        "fewer steps": replace(m, bundle=replace(m.bundle, dp=replace(m.bundle.dp, steps=1))),
    }
    key = load_private_key(fed.keys / "site-a", None)
    for what, forged in forgeries.items():
        inbox = fed.root / f"inbox-{what}"
        inbox.mkdir()
        write_artifact(inbox / bundle.name, raw, forged, key)
        result = cli("aggregate", fed.hub, "--inbox", inbox, "--json")
        assert result.code != 0
        (row,) = json.loads(result.out)["report"]["rows"]
        assert row["verdict"] == "rejected" and row["code"] == "dp-mechanism", row
        needle = {"weaker": "clip 50", "none": "none (no DP)", "fewer steps": "1 steps"}[what]
        assert needle in row["reason"]


@pytest.mark.slow
def test_dp_resume_after_a_kill_keeps_the_ledger_exact(tmp_path: Path, cli, monkeypatch) -> None:
    fed = build_federation(tmp_path / "fed", extra=(*DP_OPTIONS, "--dp-budget", "5"))
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    site = fed.sites["site-a"]
    package = site / "next.safetensors"
    shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors", package)
    shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors.sig", f"{package}.sig")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")

    import site_kit.training as training

    real_save = training.Checkpoint.save

    def save_then_die(self, epoch, *args, **kwargs):  # killed right after epoch 1 is on disk
        real_save(self, epoch, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Checkpoint, "save", save_then_die)
    assert cli("train", package, "--site", site, "--device", "cpu").code == 130
    monkeypatch.setattr(training.Checkpoint, "save", real_save)
    # a twin of the killed site that trains the round straight through with the same secret
    twin = tmp_path / "twin"
    shutil.copytree(site, twin)
    for leftover in list(twin.glob("work/*/checkpoint.safetensors")) + list(
        twin.glob("work/*/progress.json")
    ):
        leftover.unlink()
    assert list(twin.glob("work/*/dp-seed"))
    resumed = cli("train", package, "--site", site, "--device", "cpu", "--json")
    assert resumed.code == 0, resumed.err
    assert json.loads(resumed.out)["resumed_from_epoch"] == 1
    assert cli("train", twin / "next.safetensors", "--site", twin, "--device", "cpu").code == 0
    name = "fed-r0001-site-a.safetensors"
    a, b = site / "outbox" / name, twin / "outbox" / name
    sa, sb = scan_file(a), scan_file(b)
    assert a.read_bytes()[sa.header.data_start :] == b.read_bytes()[sb.header.data_start :]
    ledger = json.loads((site / "privacy.json").read_text())["entries"]
    assert [e["round"] for e in ledger] == [0, 1]  # the killed attempt was not counted twice
    assert _bundle_manifest(a).bundle.dp == _bundle_manifest(b).bundle.dp  # type: ignore[union-attr]


@pytest.mark.slow
def test_simulate_runs_dp_and_sites_stop_at_their_budget(cli) -> None:
    common = (
        "simulate",
        "--sites",
        "2",
        "--model",
        "logreg",
        "--schedule",
        "periodic:3",
        "--no-baselines",
        "--json",
    )
    result = cli(*common, "--dp-epsilon", "1", "--dp-budget", "1.05")
    assert result.code == 0, result.err
    run = json.loads(result.out)["runs"][0]
    assert all(0.9 < v <= 1.05 for v in run["dp_epsilon"].values())  # only round 1 fits
    assert run["accuracy"][0] != run["accuracy"][1] == run["accuracy"][2] == run["accuracy"][3]
    bad = cli(*common, "--dp-epsilon", "1")
    assert bad.code == 2 and "--dp-budget" in bad.err


@pytest.mark.slow
def test_dp_with_a_frozen_backbone_makes_partial_bundles_the_hub_accepts(
    tmp_path: Path, cli
) -> None:
    extra = ("--dp-noise-multiplier", "1", "--dp-budget", "5", "--freeze", "1.*")
    fed = build_federation(tmp_path / "fed", model="mlp:hidden=16", extra=extra)
    for bundle in fed.bundles.values():
        scan = scan_file(bundle)
        assert [t.name for t in scan.header.tensors] == ["3.bias", "3.weight"]
        assert scan.manifest.bundle is not None and scan.manifest.bundle.dp is not None
    fed.carry()
    result = cli("aggregate", fed.hub, "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)["report"]["rows"]
    assert [r["verdict"] for r in rows] == ["accepted", "accepted"]
    assert all(0 < r["dp_epsilon_total"] <= 5 for r in rows)


@pytest.mark.slow
def test_hub_refuses_a_bundle_whose_privacy_spending_went_back(
    dp_federation: Federation, cli
) -> None:
    """A site that reset its ledger reports fewer rounds or a smaller total epsilon than its
    bundles the hub already accepted: the hub quarantines it with a reason, also after the
    site's key was replaced (history is kept by site id), and accepts an honest report."""
    from flsilo.format.artifact import write_artifact
    from flsilo.format.tensorfile import RawTensor
    from flsilo.signing.keys import load_private_key
    from tests.conftest import fingerprint

    fed = dp_federation
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    events = [json.loads(line) for line in (fed.hub / "events.jsonl").read_text().splitlines()]
    (accepted,) = [e for e in events if e["event"] == "accept" and e["site"] == "site-a"]
    assert accepted["dp_rounds"] == 1  # kept in the log for the next comparison
    earlier = accepted["dp_epsilon_total"]
    bundle = fed.bundles["site-a"]
    scan = scan_file(bundle)
    m = scan.manifest
    assert m.bundle is not None and m.bundle.dp is not None
    data = memoryview(bundle.read_bytes())
    start = scan.header.data_start
    raw = {
        t.name: RawTensor(t.dtype, t.shape, data[start + t.begin : start + t.end])
        for t in scan.header.tensors
    }
    package_sha = scan_file(fed.hub / "packages" / "fed-r0001.safetensors").sha256
    dp = m.bundle.dp
    NAME = "fed-r0001-site-a.safetensors"  # noqa: N806

    def forged(rounds: int, total: float, signer: Path, *dry: str) -> dict:
        claim = replace(dp, rounds=rounds, epsilon_total=total, epsilon_round=total / 2)
        b = replace(m.bundle, base_package_sha256=package_sha, dp=claim)
        inbox = fed.root / f"inbox-{rounds}-{total}-{signer.name}"
        inbox.mkdir()
        signed = replace(m, round=1, bundle=b)
        write_artifact(inbox / NAME, raw, signed, load_private_key(signer, None))
        result = cli("aggregate", fed.hub, "--inbox", inbox, "--json", *dry)
        assert result.out, result.err
        (row,) = json.loads(result.out)["report"]["rows"]
        return row

    key = fed.keys / "site-a"
    reset = forged(1, earlier, key, "--dry-run")  # the ledger deleted: one round again
    assert reset["verdict"] == "rejected" and reset["code"] == "dp-spending-went-back", reset
    assert "reports 1 private round" in reset["reason"] and "at least 1 before" in reset["reason"]
    smaller = forged(2, earlier - 0.1, key, "--dry-run")  # the ledger edited: less epsilon
    assert smaller["code"] == "dp-spending-went-back", smaller
    assert f"less than the {earlier:.3f}" in smaller["reason"]
    honest = forged(2, min(1.2, earlier + 0.1), key, "--dry-run")
    assert honest["verdict"] == "accepted", honest
    # after a rekey the site's history stays: the same forgery, signed by the new key
    new = make_key(fed.keys / "site-a-2")
    pub = fed.keys / "site-a-2.pub"
    assert cli("hub", "rekey", fed.hub, "site-a", pub, "--fingerprint", fingerprint(pub)).code == 0
    rekeyed = forged(1, earlier, new)  # aggregated for real: quarantined with the reason
    assert rekeyed["code"] == "dp-spending-went-back", rekeyed
    (kept,) = (fed.hub / "quarantine" / "r0001").glob(f"*-{NAME}.reason.txt")
    reason = json.loads(kept.read_text())
    assert reason["code"] == "dp-spending-went-back" and "ledger was reset" in reason["message"]
    assert "restores privacy.json" in reason["hint"]


@pytest.mark.slow
def test_a_site_refuses_to_train_on_a_deleted_or_edited_ledger(
    dp_federation: Federation, cli
) -> None:
    """Without the check, a site whose privacy.json is gone trains round 1 as its first private
    round (its budget would have refused it) and reports a smaller total epsilon."""
    fed = dp_federation
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    site = fed.sites["site-a"]
    package = site / "next.safetensors"
    shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors", package)
    shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors.sig", f"{package}.sig")
    ledger = site / "privacy.json"
    original = ledger.read_bytes()
    outbox = sorted(p.name for p in (site / "outbox").iterdir())
    edited = json.loads(original)
    edited["entries"][0]["noise_multiplier"] *= 10  # claims far more noise than it used
    for damage in (ledger.unlink, lambda: ledger.write_text(json.dumps(edited))):
        damage()
        before = ledger.read_bytes() if ledger.exists() else None
        refused = cli("train", package, "--site", site, "--device", "cpu")
        assert refused.code == 3 and "error[privacy-ledger-reset]" in refused.err, refused.err
        assert "record.jsonl" in refused.err and "restore privacy.json" in refused.err
        assert len(refused.err.strip().splitlines()) == 1
        assert (ledger.read_bytes() if ledger.exists() else None) == before
        assert sorted(p.name for p in (site / "outbox").iterdir()) == outbox
    ledger.write_bytes(original)  # restored: back to the budget's own refusal
    again = cli("train", package, "--site", site, "--device", "cpu")
    assert again.code == 3 and "error[dp-budget-exceeded]" in again.err
