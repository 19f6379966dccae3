"""Per-round history of a federation, folded from the hub's event log alone (no torch).

For each round: the package it produced, the strategy, and per site whether its bundle was
accepted or rejected (with the code), its sample count, its share of the weight, and the
validation accuracy the site reported before and after local training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub_kit.eventlog import Event


@dataclass
class SiteRound:
    site: str
    verdict: str  # "accepted" or "rejected: CODE"
    samples: int | None = None
    share: float | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None


@dataclass
class RoundHistory:
    round: int
    package: str | None = None
    strategy: str | None = None
    time: str | None = None
    sites: list[SiteRound] = field(default_factory=list)

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


def _accuracy(data: dict[str, Any], key: str) -> float | None:
    metrics = data.get(key)
    return float(metrics["accuracy"]) if isinstance(metrics, dict) else None


def history(events: list[Event]) -> list[RoundHistory]:
    """Fold accept, reject and aggregate events into one record per round, oldest first."""
    rounds: dict[int, RoundHistory] = {}

    def at(r: int) -> RoundHistory:
        return rounds.setdefault(r, RoundHistory(round=r))

    for ev in events:
        if ev.event == "accept":
            at(ev["round"]).sites.append(
                SiteRound(
                    site=ev["site"],
                    verdict="accepted",
                    samples=ev.data.get("samples"),
                    share=ev.data.get("weight"),
                    accuracy_before=_accuracy(ev.data, "metrics_global"),
                    accuracy_after=_accuracy(ev.data, "metrics_trained"),
                )
            )
        elif ev.event == "reject":
            at(ev["round"]).sites.append(
                SiteRound(site=ev["site"], verdict=f"rejected: {ev.data.get('code', '?')}")
            )
        elif ev.event == "aggregate":
            rec = at(ev["round"])
            rec.package, rec.strategy, rec.time = ev["package"], ev.data.get("strategy"), ev.time
    for rec in rounds.values():
        total = sum(s.share or 0.0 for s in rec.sites if s.verdict == "accepted")
        for s in rec.sites:
            if s.share is not None and total > 0:
                s.share = s.share / total  # weights as a share of the round, whatever the rule
        rec.sites.sort(key=lambda s: (s.verdict != "accepted", s.site))
    return [rounds[r] for r in sorted(rounds)]


def to_jsonable(rounds: list[RoundHistory]) -> list[dict[str, Any]]:
    return [
        {
            "round": r.round,
            "package": r.package,
            "strategy": r.strategy,
            "time": r.time,
            "accuracy_after": r.accuracy_after,
            "sites": [s.__dict__ for s in r.sites],
        }
        for r in rounds
    ]
