"""Per-round history of a federation, folded from the hub's event log alone (no torch).

For each round: the package it produced, the strategy, and per site whether its bundle was
accepted or rejected (with the code), its sample count, its share of the weight, and the
validation accuracy the site reported before and after local training; then the warnings
a hub administrator should act on: validation splits too small to mean much, a global
model whose validation loss stopped falling, and accuracy that sits at chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flsilo.signing.claims import metric_name
from hub_kit.events import Accept, Aggregate, Logged, Reject, ReportedMetrics
from hub_kit.report import Verdict


@dataclass
class SiteRound:
    site: str
    verdict: Verdict
    """Accepted or rejected (the log records no skipped bundle)."""
    samples: int | None = None
    share: float | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    loss_before: float | None = None
    """Validation loss of the round's incoming global model, as the site measured it."""
    val_samples: int | None = None
    primary_before: float | None = None
    primary_after: float | None = None
    """The task's primary metric before and after training (classify: the accuracy)."""
    code: str | None = None
    """A rejected bundle's error code."""

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED

    @property
    def verdict_text(self) -> str:
        """As the table, the card and ``--json`` show it: ``accepted``, ``rejected: CODE``."""
        return f"{self.verdict}: {self.code}" if self.code is not None else str(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: the fields, the verdict as text, the code within it."""
        out = dict(self.__dict__, verdict=self.verdict_text)
        del out["code"]
        return out


SMALL_VALIDATION = 30
"""Fewer validation samples than this at a site: one sample moves its accuracy > 3 points."""
LOSS_PATIENCE = 2
"""Rounds without a new lowest validation loss of the global model before it is flagged."""


@dataclass
class RoundHistory:
    round: int
    package: str | None = None
    strategy: str | None = None
    time: str | None = None
    sites: list[SiteRound] = field(default_factory=list)
    hub_claim: dict[str, Any] | None = None
    """The hub's own figures for the round's package (``aggregate --eval``), as logged."""

    @property
    def accuracy_after(self) -> float | None:
        """Sample-weighted mean of what accepted sites reported after local training."""
        pairs = [
            (s.accuracy_after, s.samples)
            for s in self.sites
            if s.accuracy_after is not None and s.samples
        ]
        total = sum(n for _, n in pairs)
        return sum(a * n for a, n in pairs) / total if total else None

    @property
    def primary_after(self) -> float | None:
        """Sample-weighted mean of the task's primary metric after local training."""
        pairs = [
            (s.primary_after, s.samples)
            for s in self.sites
            if s.primary_after is not None and s.samples
        ]
        total = sum(n for _, n in pairs)
        return sum(a * n for a, n in pairs) / total if total else None

    @property
    def loss_before(self) -> float | None:
        """Sample-weighted validation loss of the global model this round started from."""
        pairs = [(s.loss_before, s.samples) for s in self.sites if s.loss_before is not None]
        total = sum(n or 0 for _, n in pairs)
        return sum(v * (n or 0) for v, n in pairs) / total if total else None

    @property
    def val_samples(self) -> int:
        return sum(s.val_samples or 0 for s in self.sites if s.accepted)


def _float(value: float | None) -> float | None:
    return float(value) if value is not None else None


def _primary(reported: ReportedMetrics | None, metric: str) -> float | None:
    if reported is None:
        return None
    if metric == "accuracy":
        return _float(reported.accuracy)
    return _float((reported.values or {}).get(metric))


def _accepted(ev: Accept, metric: str) -> SiteRound:
    before: ReportedMetrics | None = ev.metrics_global
    after: ReportedMetrics | None = ev.metrics_trained
    return SiteRound(
        site=ev.site,
        verdict=Verdict.ACCEPTED,
        samples=ev.samples,
        share=ev.weight,
        accuracy_before=_float(before.accuracy) if before else None,
        accuracy_after=_float(after.accuracy) if after else None,
        loss_before=_float(before.loss) if before else None,
        val_samples=after.samples if after else None,
        primary_before=_primary(before, metric),
        primary_after=_primary(after, metric),
    )


def history(events: Sequence[Logged], metric: str = "accuracy") -> list[RoundHistory]:
    """Fold accept, reject and aggregate events into one record per round, oldest first.

    ``metric`` is the task's primary metric (``flsilo.tasks``), which the sites report in
    their bundles' metrics (``values``; classify's is the accuracy)."""
    rounds: dict[int, RoundHistory] = {}

    def at(r: int) -> RoundHistory:
        return rounds.setdefault(r, RoundHistory(round=r))

    for ev in events:
        body = ev.body
        if isinstance(body, Accept):
            at(body.round).sites.append(_accepted(body, metric))
        elif isinstance(body, Reject):
            at(body.round).sites.append(SiteRound(body.site, Verdict.REJECTED, code=body.code))
        elif isinstance(body, Aggregate):
            rec = at(body.round)
            rec.package, rec.strategy, rec.time = body.package, body.strategy, ev.time
            rec.hub_claim = dict(body.hub_evaluation) if body.hub_evaluation else None
    for rec in rounds.values():
        total = sum(s.share or 0.0 for s in rec.sites if s.accepted)
        for s in rec.sites:
            if s.share is not None and total > 0:
                s.share = s.share / total  # weights as a share of the round, whatever the rule
        rec.sites.sort(key=lambda s: (not s.accepted, s.site))
    return [rounds[r] for r in sorted(rounds)]


def at_chance(rnd: RoundHistory, num_classes: int) -> bool:
    """The round's accuracy is within two binomial standard errors of guessing (1/classes)."""
    accuracy, n = rnd.accuracy_after, rnd.val_samples
    if accuracy is None or n == 0 or num_classes < 2:
        return False
    chance = 1.0 / num_classes
    return accuracy <= chance + 2 * math.sqrt(chance * (1 - chance) / n)


def chance_classes(task: str, classes: Sequence[str]) -> int:
    """K for the chance check (1 in K): a single-label idea, so 0 (no check) for tasks whose
    figure is not one-of-K accuracy (multilabel's AUROC, detection's mAP, sequences)."""
    return len(classes) if task == "classify" else 0


def warnings(rounds: list[RoundHistory], num_classes: int, metric: str = "accuracy") -> list[str]:
    """What the administrator should look at, one sentence each, oldest round first;
    ``metric`` names the task's primary figure (what a small split makes noisy)."""
    out: list[str] = []
    small = sorted(
        {
            s.site
            for r in rounds
            for s in r.sites
            if s.val_samples is not None and 0 < s.val_samples < SMALL_VALIDATION
        }
    )
    if small:
        out.append(
            f"validation splits under {SMALL_VALIDATION} samples at {', '.join(small)}: "
            f"their {metric_name(metric)} moves by several points on one sample; read trends, "
            "not values"
        )
    chance = [r.round for r in rounds if at_chance(r, num_classes)]
    if chance:
        out.append(
            f"accuracy at chance (1 in {num_classes}) after round {_rounds_text(chance)}: "
            "the federation is not learning; check the sites' data and preprocessing "
            "('flsilo site check-data --preview') and the learning rate"
        )
    stalled = stalled_since(rounds)
    if stalled is not None:
        out.append(
            f"the global model's validation loss has not fallen since round {stalled}: "
            "more rounds may not help; consider a lower learning rate or stopping here"
        )
    return out


def stalled_since(rounds: list[RoundHistory]) -> int | None:
    """The round after which the global model's validation loss stopped reaching new lows.

    Sites measure the incoming global model before training, so round r's ``loss_before``
    is the loss of the package made at the end of round r - 1. Flagged when the last
    ``LOSS_PATIENCE`` rounds brought no new lowest loss.
    """
    losses = [(r.round, r.loss_before) for r in rounds if r.loss_before is not None]
    if len(losses) <= LOSS_PATIENCE:
        return None
    best_at, best = losses[0]
    for rnd, loss in losses[1:]:
        if loss is not None and best is not None and loss < best:
            best_at, best = rnd, loss
    if losses[-1][0] - best_at >= LOSS_PATIENCE and best_at != losses[-1][0]:
        return best_at
    return None


def _rounds_text(rounds: list[int]) -> str:
    return ", ".join(map(str, rounds)) if len(rounds) <= 4 else f"{rounds[0]}-{rounds[-1]}"


def to_jsonable(rounds: list[RoundHistory], num_classes: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "round": r.round,
            "package": r.package,
            "strategy": r.strategy,
            "time": r.time,
            "accuracy_after": r.accuracy_after,
            "primary_after": r.primary_after,
            "loss_before": r.loss_before,
            "at_chance": at_chance(r, num_classes),
            "sites": [s.to_dict() for s in r.sites],
            "hub_claim": r.hub_claim,
        }
        for r in rounds
    ]
