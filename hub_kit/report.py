"""What a round did, or would do, with each inbox entry: the report of ``aggregate``,
``aggregate --dry-run`` and ``hub status --inbox``.

One :class:`SiteRow` per inbox entry, with its :class:`Verdict`; :class:`AggregateReport`
holds the rows and the round's figures. The rows are built from the intake's outcome by
:func:`site_rows`, with the figures the aggregation measured (weights after any cap,
update norms, distances) where the round was computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flsilo.format import manifest as mf
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import WorkspaceError
from flsilo.signing.claims import HubEvaluation
from hub_kit.weighting import shares

if TYPE_CHECKING:  # the report's types alone stay light: history reads Verdict from here
    from hub_kit.streaming import SiteFigures
    from hub_kit.verdicts import Candidate, IntakeResult


class Verdict(StrEnum):
    """What the round does with an inbox entry."""

    ACCEPTED = "accepted"
    """Verified and admitted (combined into the next package, when the round is computed)."""
    REJECTED = "rejected"
    """Refused, with a code, a reason and a hint (quarantined by a real round)."""
    SKIPPED = "skipped"
    """Not a candidate at all: already used, or an identical copy of another entry."""


@dataclass(frozen=True)
class SiteRow:
    site: str
    file: str
    verdict: Verdict
    reason: str | None
    code: str | None
    hint: str | None
    samples: int | None
    weight: float | None
    global_accuracy: float | None
    trained_accuracy: float | None
    dp_epsilon_total: float | None = None
    share: float | None = None
    """This site's share of the total weight, after any cap."""
    update_norm: float | None = None
    """L2 norm of (bundle - the round's package), over every float tensor."""
    distance: float | None = None
    """L2 distance from this site's update to the aggregated update."""
    capped: bool = False
    cosine: float | None = None
    """Cosine of this site's update to the round's robust aggregate, the coordinate-wise
    median update (weight rounds only)."""
    late: int = 0
    """For an accepted bundle: how many rounds older than the current package its base is."""
    input_drift: dict[str, Any] | None = None
    """Weight rounds: ``{flagged, distance, hint}`` from the bundle's input summary
    (hub_kit.drift); None for a statistics round or a rejected bundle."""
    global_primary: float | None = None
    trained_primary: float | None = None
    """The task's primary metric (the report's ``metric``) the site reported on its
    validation split, before and after local training (classify: the accuracy)."""

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED

    @property
    def verdict_text(self) -> str:
        """The verdict as reports print it: ``accepted (late by 2)`` for a late bundle."""
        if self.accepted and self.late:
            return f"accepted (late by {self.late})"
        return self.verdict.value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = mf.to_jsonable(self)
        del out["late"]  # stated in the verdict's text, as ever
        return out | {"verdict": self.verdict_text}


@dataclass(frozen=True)
class Shortfall:
    """Why a round was not aggregated: it needs ``need`` verified bundles (and what to do)."""

    need: int
    hint: str


@dataclass(frozen=True)
class AggregateReport:
    round: int
    package: Path | None
    sha256: str | None
    strategy: str
    rows: tuple[SiteRow, ...]
    missing_sites: tuple[str, ...]
    global_accuracy: float | None
    trained_accuracy: float | None
    final: bool
    dp_budget: float | None = None
    norm_gate: float | None = None
    cosine_gate: float | None = None
    max_weight_share: float | None = None
    server_optimizer: str = "none"
    merge: str = "average"
    shortfall: Shortfall | None = None
    """Set when fewer bundles verified than the round needs: nothing was aggregated."""
    evaluations: tuple[str, ...] = ()
    """Sites' evaluation reports archived with this round (``hub evaluations`` tables them)."""
    refused_evaluations: tuple[str, ...] = ()
    """Evaluation reports in the inbox that did not verify, each with its reason."""
    misnamed: tuple[str, ...] = ()
    """Inbox files not read because a copy changed their extension (``X.SAFETENSORS``),
    each with the name to give it (flsilo.format.copynames.misnamed_files)."""
    weight_warning: str | None = None
    """Set when no --max-weight-share applies and one site holds over half of the weight
    (hub_kit.weighting.dominant_share_warning)."""
    learning_warnings: tuple[str, ...] = ()
    """From the log's history up to this round: accuracy at chance, a validation loss that
    stopped falling, validation splits too small to mean much (hub_kit.history.warnings)."""
    hub_evaluation: HubEvaluation | None = None
    """``--eval``: the hub's figures for the new package on its own test set (also in the
    package's manifest and the log's aggregate event)."""
    require_evaluations: int = 0
    """``hub init --require-evaluations M``: the final package is final for use only once M
    sites' evaluation reports on it verify (hub_kit.finality)."""
    weight_round: bool = True
    """A round of weight updates, measured (norm, distance, cosine); False for a statistics
    round (a solved head), which has no update direction."""
    metric: str = "accuracy"
    """The task's primary metric: what the rows' ``global_primary`` and ``trained_primary``
    and the report's own hold (``mean_auroc``, ``exact_match``, ``map50``...)."""
    global_primary: float | None = None
    trained_primary: float | None = None
    """Sample-weighted across the accepted sites, as ``global_accuracy`` and
    ``trained_accuracy`` are for the accuracy."""

    @property
    def accepted(self) -> int:
        return sum(1 for row in self.rows if row.accepted)

    @property
    def rejected(self) -> int:
        return sum(1 for row in self.rows if row.verdict is Verdict.REJECTED)

    def to_dict(self) -> dict[str, Any]:
        return mf.to_jsonable(self) | {
            "package": str(self.package) if self.package else None,
            "rows": [row.to_dict() for row in self.rows],
        }

    def shortfall_error(self) -> WorkspaceError | None:
        """The one-line error a round without enough bundles ends with; None for a done round."""
        if self.shortfall is None:
            return None
        missing = ", ".join(self.missing_sites) or "none"
        return WorkspaceError(
            f"only {self.accepted} of the {self.shortfall.need} required bundles verified for "
            f"round {self.round}; missing: {missing}",
            code=Code.NOT_ENOUGH_SITES,
            hint=self.shortfall.hint,
        )


def weighted(metrics: list[mf.Metrics | None], metric: str = "accuracy") -> float | None:
    """Sample-weighted ``metric`` (default the accuracy) across sites that reported it."""
    reported = [
        (v, m.samples) for m in metrics if m is not None and (v := primary(m, metric)) is not None
    ]
    total = sum(n for _, n in reported)
    return sum(v * n for v, n in reported) / total if total else None


def primary(metrics: mf.Metrics | None, metric: str) -> float | None:
    """``metric`` as a bundle's metrics report it: the accuracy, or one of the task's values."""
    if metrics is None:
        return None
    if metric == "accuracy":
        return metrics.accuracy
    value = metrics.values.get(metric)
    return float(value) if value is not None else None


def site_rows(
    result: IntakeResult,
    figures: dict[str, dict[str, Any]] | None = None,
    drift: dict[str, dict[str, Any]] | None = None,
    metric: str = "accuracy",
) -> list[SiteRow]:
    """One row per inbox entry: accepted on time first, then the rest, by site and file.

    ``figures`` maps a bundle's sha256 to what the first pass or the aggregation measured
    for it (a bundle a gate refused keeps its update norm and cosine).
    """
    rows = []
    for c in result.candidates:
        b = c.verified.manifest.bundle
        assert b is not None
        fields: dict[str, Any] = {
            "site": c.site,
            "file": c.inbox_path.name,
            "verdict": Verdict.ACCEPTED,
            "late": c.age,
            "reason": None,
            "code": None,
            "hint": None,
            "samples": b.num_samples,
            "weight": c.weight,
            "global_accuracy": b.metrics_global.accuracy if b.metrics_global else None,
            "trained_accuracy": b.metrics_trained.accuracy if b.metrics_trained else None,
            "dp_epsilon_total": b.dp.epsilon_total if b.dp else None,
            "global_primary": primary(b.metrics_global, metric),
            "trained_primary": primary(b.metrics_trained, metric),
        }
        fields.update((figures or {}).get(c.verified.sha256, {}))
        if drift is not None:
            fields["input_drift"] = drift.get(c.site)
        rows.append(SiteRow(**fields))
    for r in result.rejections:
        measured = (figures or {}).get(r.sha256, {}) if r.sha256 else {}
        rows.append(
            SiteRow(
                r.site,
                r.inbox_path.name,
                Verdict.REJECTED,
                r.error.message,
                r.error.code,
                r.error.hint,
                None,
                None,
                None,
                None,
                update_norm=measured.get("update_norm"),
                cosine=measured.get("cosine"),
            )
        )
    for s in result.skipped:
        rows.append(
            SiteRow(
                s.site,
                s.inbox_path.name,
                Verdict.SKIPPED,
                s.why,
                None,
                None,
                None,
                None,
                None,
                None,
            )
        )
    return sorted(rows, key=lambda r: (not (r.accepted and not r.late), r.site, r.file))


def site_figures(
    candidates: list[Candidate],
    weights: list[float],
    capped: list[bool],
    figures: list[SiteFigures],
    cosines: dict[str, float | None],
) -> dict[str, dict[str, Any]]:
    """What the aggregation measured for each accepted bundle, by its sha256 (for the rows).

    ``cosines``: those a gate judged (first pass, all the round's updates), shown instead of
    the aggregation's own (the accepted updates only).
    """
    share = shares(weights)
    return {
        c.verified.sha256: {
            "weight": w,
            "share": s,
            "capped": cap,
            "update_norm": f.update_norm,
            "distance": f.distance,
            "cosine": cosines.get(c.verified.sha256, f.cosine),
        }
        for c, w, s, cap, f in zip(candidates, weights, share, capped, figures, strict=True)
    }


def measured_figures(
    norms: dict[str, float], cosines: dict[str, float | None]
) -> dict[str, dict[str, Any]]:
    """The first pass's figures alone, by sha256 (a dry run: nothing aggregated)."""
    return {sha: {"update_norm": norm, "cosine": cosines.get(sha)} for sha, norm in norms.items()}
