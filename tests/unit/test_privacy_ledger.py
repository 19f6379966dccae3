"""The site's privacy ledger is checked against its own hash-chained record before a round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsilo.plans.plan import Plan
from flsilo.runtime.errors import VerificationError
from site_kit import record as site_record
from site_kit.privacy import LEDGER_FILE, DPRun, Ledger, prepare_round
from tests.conftest import needs

pytestmark = needs("opacus", reason="the ledger's accountant needs the 'dp' extra (Opacus)")

PLAN = Plan(local_epochs=1, batch_size=16, dp_noise_multiplier=1.0, dp_budget=100)
N = 200


def train(root: Path, round_: int) -> DPRun:
    """One private round as ``flsilo train`` keeps it: ledger entry first, record event after."""
    sha = f"{round_:x}" * 64
    run = prepare_round(root, root / f"w{round_}", PLAN, N, round_, sha)
    assert run.entry is not None
    report = run.report(PLAN)
    spent = site_record.Spent(report.epsilon_round, report.epsilon_total, report.delta)
    trained = site_record.Trained(
        round=round_,
        package_sha256=sha,
        bundle=f"fed-r{round_:04d}-site-a.safetensors",
        bundle_sha256="0" * 64,
        data_sha256_salted="0" * 64,
        train_samples=N,
        val_samples=0,
        skipped=0,
        overrides={},
        privacy_budget_spent=spent,
    )
    site_record.record(root, trained)
    return run


def refused(root: Path, round_: int) -> VerificationError:
    path = root / LEDGER_FILE
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(VerificationError) as caught:
        prepare_round(root, root / f"w{round_}", PLAN, N, round_, "f" * 64)
    assert (path.read_bytes() if path.exists() else None) == before  # nothing written
    assert not (root / f"w{round_}").exists()
    return caught.value


@pytest.fixture
def site(tmp_path: Path) -> Path:
    train(tmp_path, 0)
    train(tmp_path, 1)
    return tmp_path


def test_a_deleted_ledger_is_refused_with_what_to_restore(site: Path) -> None:
    spent = Ledger.open(site).spent()
    (site / LEDGER_FILE).unlink()
    err = refused(site, 2)
    assert err.code == "privacy-ledger-reset" and err.exit_code == 3
    assert "no entry for rounds 0, 1" in err.message
    assert f"epsilon {spent:.3f} spent" in err.message
    assert "restore privacy.json from the backup taken after round 1" in (err.hint or "")


def test_an_edited_ledger_is_refused(site: Path) -> None:
    path = site / LEDGER_FILE
    original = path.read_text()
    data = json.loads(original)
    data["entries"] = data["entries"][1:]  # a round dropped
    path.write_text(json.dumps(data))
    assert "no entry for round 0" in refused(site, 2).message
    data = json.loads(original)
    for entry in data["entries"]:  # every round claimed noisier than it was, totals kept
        entry["noise_multiplier"] = 3.0
    path.write_text(json.dumps(data))
    err = refused(site, 2)
    assert err.code == "privacy-ledger-reset" and "2 rounds compose to epsilon" in err.message
    path.write_text(original)  # the backup restored: the site trains again
    run = prepare_round(site, site / "w2", PLAN, N, 2, "f" * 64)
    assert run.entry is not None and run.entry.rounds == 3


def test_a_ledger_ahead_of_the_record_is_fine(tmp_path: Path) -> None:
    """A round entered and then killed before its bundle over-counts; that is never refused."""
    train(tmp_path, 0)
    prepare_round(tmp_path, tmp_path / "w1", PLAN, N, 1, "e" * 64)  # killed: no record event
    run = prepare_round(tmp_path, tmp_path / "w1", PLAN, N, 1, "e" * 64)  # resumed
    assert run.entry is not None and run.entry.rounds == 2


def test_epsilon_is_the_rdp_accountants_to_the_bit() -> None:
    """flsilo keeps each (noise, q) pair's one-step RDP; Opacus's accountant recomputes it
    for every round: the composed epsilon is the same float."""
    from opacus.accountants import RDPAccountant

    from site_kit.privacy import ALPHAS, Spend, epsilon

    spends = [Spend(1.1, 0.08, 13), Spend(1.1, 0.08, 7)]  # one pair, two rounds
    accountant = RDPAccountant()
    accountant.history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in spends]
    expected = accountant.get_epsilon(delta=1e-5, alphas=ALPHAS)
    assert epsilon(spends, 1e-5) == float(expected)
    assert epsilon(spends[:1], 1e-5) < epsilon(spends, 1e-5)
