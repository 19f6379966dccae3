"""The hub's side of differential privacy: the DP plan from federation.toml, and its gates.

Sites run DP-SGD (site_kit.privacy); the hub never adds noise and never needs Opacus or
torch. It declares the mechanism in every package's plan, refuses bundles whose declared
mechanism differs from it or whose reported spending passes the budget, and shows what
each site has spent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flsilo.format.artifact import Verified
from flsilo.format.manifest import BundleInfo
from flsilo.plans.federation import FederationConfig
from flsilo.plans.plan import DPPlan, dp_of
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError, UsageError
from hub_kit.events import Accept

# Room for float rounding between the site's accountant and the hub's comparison.
BUDGET_SLACK = 1e-9


@dataclass(frozen=True)
class DPAccepted:
    """What one accepted DP bundle reported, from its ``accept`` event in the log."""

    base_round: int
    epsilon_total: float
    rounds: int | None  # None in logs written before accept events kept it

    @classmethod
    def of(cls, ev: Accept) -> DPAccepted:
        assert ev.dp_epsilon_total is not None
        return cls(
            base_round=ev.base_round, epsilon_total=float(ev.dp_epsilon_total), rounds=ev.dp_rounds
        )


def dp_spent(history: Sequence[DPAccepted]) -> float | None:
    """The largest total epsilon a site reported in accepted bundles; None if none."""
    return max((a.epsilon_total for a in history), default=None)


def dp_plan(config: FederationConfig) -> DPPlan | None:
    """The DP mechanism every package of this federation declares; None without DP."""
    return dp_of(config.plan)


def dp_budget(config: FederationConfig) -> float | None:
    """The total epsilon per site of a DP federation; None without DP."""
    dp = dp_plan(config)
    return dp.budget if dp else None


def check_config(config: FederationConfig) -> None:
    """Refuse, at hub init, a DP federation that could not keep its promise.

    The plan's own DP rules (a budget, one mechanism, no FedProx) are checked with the rest
    of the plan when the configuration is built; these are the ones that need more context.
    """
    if dp_plan(config) is None:
        return
    leaky = _leaky_round_kinds(config)
    if leaky:
        raise UsageError(
            f"a DP federation cannot run {leaky[0]}: they would leave the privacy guarantee",
            code=Code.DP_PLAN,
            hint="drop the DP options or that setting; only noisy DP-SGD rounds are allowed",
        )


def _leaky_round_kinds(config: FederationConfig) -> list[str]:
    """Round kinds that ship un-noised data summaries (statistics, Fisher diagonals)."""
    # Fisher merging with DP is refused by the plan's own rules (flsilo.plans.plan.plan_problem).
    leaky = []
    if config.schedule.kind.startswith("stats+"):
        leaky.append("stats rounds (sites ship input statistics)")
    if "closed-form" in config.schedule.kind.split("+"):
        leaky.append("closed-form rounds (sites ship feature statistics)")
    return leaky


def refuse_batchnorm(modules: Iterable[Any], spec: str) -> None:
    """BatchNorm mixes the samples of a batch, so per-sample gradients (and DP) are undefined."""
    for module in modules:
        if "BatchNorm" in type(module).__name__:
            raise UsageError(
                f"model {spec!r} has {type(module).__name__}, which DP-SGD cannot privatise",
                code=Code.DP_BATCHNORM,
                hint="use a BatchNorm-free model (the built-ins are), freeze the BatchNorm "
                "layers with the backbone (--freeze), give a torchvision or timm spec norm=group, "
                "or replace BatchNorm by nn.GroupNorm in a plug-in",
            )


def check_bundle(
    verified: Verified, config: FederationConfig, history: Sequence[DPAccepted] = ()
) -> None:
    """Raise PolicyError when a bundle's DP mechanism or spending breaks the federation's plan,
    or reports less than the same site's accepted bundles of earlier rounds (``history``)."""
    b = verified.manifest.bundle
    assert b is not None
    expected = dp_plan(config)
    declared = dp_of(b.plan)

    def refuse(code: Code, message: str, hint: str) -> PolicyError:
        return PolicyError(message, path=verified.path, code=code, hint=hint)

    if declared != expected:
        raise refuse(
            Code.DP_MECHANISM,
            f"bundle declares DP mechanism {describe(declared)}; the package's plan is "
            f"{describe(expected)}",
            "the site trained with another privacy setting; ask it to train on the hub's package",
        )
    if expected is None or b.dp is None:
        return
    if b.dp.accountant != expected.accountant or b.dp.delta != expected.delta:
        raise refuse(
            Code.DP_MECHANISM,
            f"bundle accounts with {b.dp.accountant} at delta {b.dp.delta:g}; the plan says "
            f"{expected.accountant} at delta {expected.delta:g}",
            "the site's flsilo differs from the hub's; install the same version",
        )
    if expected.noise_multiplier > 0 and b.dp.noise_multiplier != expected.noise_multiplier:
        raise refuse(
            Code.DP_MECHANISM,
            f"bundle used noise multiplier {b.dp.noise_multiplier:g}, the plan says "
            f"{expected.noise_multiplier:g}",
            "the site trained with another privacy setting; ask it to train on the hub's package",
        )
    problem = accounting_problem(b)
    if problem:
        raise refuse(
            Code.DP_MECHANISM,
            f"bundle's privacy accounting does not fit its plan and sample count: {problem}",
            "the site under-reported its spending; do not use this bundle",
        )
    if b.dp.epsilon_total > expected.budget + BUDGET_SLACK:
        raise refuse(
            Code.DP_BUDGET_EXCEEDED,
            f"site {b.site} reports a total epsilon of {b.dp.epsilon_total:.3f}, past the "
            f"federation's budget of {expected.budget:g}",
            "the site should have refused this round; do not use this bundle",
        )
    problem = went_back(b, verified.manifest.round, history)
    if problem:
        raise refuse(
            Code.DP_SPENDING_WENT_BACK,
            f"site {b.site} {problem}: its privacy ledger was reset",
            "do not use this bundle; the site restores privacy.json from its backup and "
            "trains again (its own check refuses a ledger short of its record)",
        )


def accounting_problem(b: BundleInfo) -> str | None:
    """What in a bundle's DP report contradicts its own plan and sample count (None: fine).

    The hub cannot rerun the accountant (that needs Opacus and torch), but the sampling rate
    and the step count follow from the plan and ``num_samples`` alone, and the epsilons must
    be ordered; a site that reports fewer steps or a lower rate would under-count epsilon.
    """
    assert b.dp is not None
    plan, n = b.plan, b.num_samples
    q = min(1.0, plan.batch_size / n)
    steps = plan.local_epochs * math.ceil(n / plan.batch_size)
    if abs(b.dp.sample_rate - q) > 1e-12 or b.dp.steps != steps:
        return (
            f"sampling rate {b.dp.sample_rate:g} and {b.dp.steps} steps, expected {q:g} and {steps}"
        )
    if not 0 < b.dp.epsilon_round <= b.dp.epsilon_total + BUDGET_SLACK or b.dp.rounds < 1:
        return "epsilon this round must be positive and at most the total"
    return None


def went_back(b: BundleInfo, round_: int, history: Sequence[DPAccepted]) -> str | None:
    """How a bundle's DP report falls short of the site's accepted bundles of earlier rounds.

    A site's ledger only grows: every bundle the hub accepted from it entered one round, so
    a bundle trained later reports at least one round more than the most any of them
    reported (or than their number), and a total epsilon at least as large. History is kept
    by site id, so a site key rekey changes nothing. Bundles of the same or a later round
    (a late one, under a staleness policy) are not compared.
    """
    assert b.dp is not None
    earlier = [a for a in history if a.base_round < round_]
    if not earlier:
        return None
    rounds = max(len({a.base_round for a in earlier}), *(a.rounds or 0 for a in earlier)) + 1
    if b.dp.rounds < rounds:
        return (
            f"reports {b.dp.rounds} private round{'s' * (b.dp.rounds != 1)}, but its bundles "
            f"the hub accepted before show at least {rounds - 1} before this one"
        )
    most = max(a.epsilon_total for a in earlier)
    if b.dp.epsilon_total < most - BUDGET_SLACK:
        return (
            f"reports a total epsilon of {b.dp.epsilon_total:.3f}, less than the "
            f"{most:.3f} it reported in a bundle the hub accepted before"
        )
    return None


def describe(dp: DPPlan | None) -> str:
    """A short human form of a DP plan, e.g. 'sigma 1.1, clip 1, delta 1e-05, budget 3'."""
    if dp is None:
        return "none (no DP)"
    how = (
        f"sigma {dp.noise_multiplier:g}"
        if dp.noise_multiplier > 0
        else f"epsilon {dp.epsilon_per_round:g} per round"
    )
    return f"{how}, clip {dp.clip:g}, delta {dp.delta:g}, budget {dp.budget:g} ({dp.accountant})"


def privacy_note(config: FederationConfig) -> str:
    """The paragraph a DP federation's site kit README adds (empty without DP)."""
    dp = dp_plan(config)
    if dp is None:
        return ""
    return (
        f"\nThis federation trains with differential privacy ({describe(dp)}).\n"
        "flsilo train needs the 'dp' extra (pip install 'flsilo[dp]', or a wheelhouse built\n"
        "with --extras dp). Your site refuses a round that would pass its budget, and keeps\n"
        "its privacy ledger in SITE_DIR/privacy.json: back it up, never edit or delete it.\n"
    )


def spent_text(spent: float | None, budget: float | None) -> str:
    """'1.23 of 3' for the aggregate table and hub status; '-' where nothing was reported."""
    if spent is None:
        return "-"
    return f"{spent:.2f} of {budget:g}" if budget is not None else f"{spent:.2f}"
