"""``flsilo aggregate``: verify the inbox, aggregate the round, sign the next package, commit.

Order of work, under the workspace lock:
1. intake: every inbox bundle is verified while copied into ``rounds/NNNN.staging``;
2. quarantine copies and reason files for rejects;
3. stream the accepted bundles into the next package and sign it;
4. move the staging folder to ``rounds/NNNN``;
5. append accept/reject/aggregate events to the log in one atomic replace: the commit.
A crash before step 5 leaves the log (and so the hub's state) as it was; a rerun redoes the
work from the untouched inbox and overwrites the uncommitted leftovers.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsilo import manifest as mf
from flsilo.artifact import scan_file
from flsilo.atomic import WorkspaceLock, remove_stale_temps
from flsilo.errors import UsageError, VerificationError, WorkspaceError
from flsilo.keys import PassphraseSource, load_private_key
from flsilo.tensorfile import Header, RawTensor
from hub_kit.intake import Candidate, IntakeResult, Rejection, intake, quarantine
from hub_kit.packaging import package_manifest, write_package
from hub_kit.privacy import dp_budget
from hub_kit.strategies import parse_strategy, strategy_text
from hub_kit.strategies.base import Strategy
from hub_kit.streaming import StreamInput, aggregate_into
from hub_kit.workspace import HubState, HubWorkspace


@dataclass(frozen=True)
class SiteRow:
    site: str
    file: str
    verdict: str
    reason: str | None
    code: str | None
    hint: str | None
    samples: int | None
    weight: float | None
    global_accuracy: float | None
    trained_accuracy: float | None
    dp_epsilon_total: float | None = None


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

    def to_dict(self) -> dict[str, Any]:
        return mf.to_jsonable(self) | {"package": str(self.package) if self.package else None}


def package_tensors(header: Header, data: bytearray) -> dict[str, RawTensor]:
    view = memoryview(data)
    return {t.name: RawTensor(t.dtype, t.shape, view[t.begin : t.end]) for t in header.tensors}


def combine(header: Header, inputs: list[StreamInput], strategy: Strategy) -> bytearray:
    """Aggregate inputs (ordered by site) into a new data section laid out like ``header``."""
    out = bytearray(header.data_size)
    aggregate_into(header.tensors, inputs, strategy, out)
    return out


def weighted(metrics: list[mf.Metrics | None]) -> float | None:
    """Sample-weighted accuracy across sites that reported it."""
    reported = [m for m in metrics if m is not None]
    total = sum(m.samples for m in reported)
    return sum(m.accuracy * m.samples for m in reported) / total if total else None


def _rows(result: IntakeResult) -> list[SiteRow]:
    rows = []
    for c in result.candidates:
        b = c.verified.manifest.bundle
        assert b is not None
        rows.append(
            SiteRow(
                site=c.site,
                file=c.inbox_path.name,
                verdict="accepted" if c.age == 0 else f"accepted (late by {c.age})",
                reason=None,
                code=None,
                hint=None,
                samples=b.num_samples,
                weight=c.weight,
                global_accuracy=b.metrics_global.accuracy if b.metrics_global else None,
                trained_accuracy=b.metrics_trained.accuracy if b.metrics_trained else None,
                dp_epsilon_total=b.dp.epsilon_total if b.dp else None,
            )
        )
    for r in result.rejections:
        rows.append(
            SiteRow(
                r.site,
                r.inbox_path.name,
                "rejected",
                r.error.message,
                r.error.code,
                r.error.hint,
                None,
                None,
                None,
                None,
            )
        )
    for s in result.skipped:
        rows.append(
            SiteRow("-", s.inbox_path.name, "skipped", s.why, None, None, None, None, None, None)
        )
    return sorted(rows, key=lambda r: (r.verdict != "accepted", r.site, r.file))


def _reject_events(
    rejections: list[Rejection], state: HubState, round_: int
) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for r in rejections:
        if (round_, r.sha256, r.error.code) in state.rejected:
            continue  # already on record from an earlier run of this round
        events.append(
            (
                "reject",
                {
                    "round": round_,
                    "site": r.site,
                    "sha256": r.sha256,
                    "file": r.inbox_path.name,
                    "code": r.error.code,
                    "reason": r.error.message,
                },
            )
        )
    return events


def aggregate_round(
    hub_dir: Path,
    *,
    inbox: Path | None = None,
    strategy: str | None = None,
    min_sites: int | None = None,
    passphrase: PassphraseSource,
) -> AggregateReport:
    ws = HubWorkspace.open(hub_dir)
    with WorkspaceLock(ws.root, "hub workspace"):
        return _aggregate_locked(ws, inbox or ws.inbox, strategy, min_sites, passphrase)


def _aggregate_locked(
    ws: HubWorkspace,
    inbox: Path,
    strategy_name: str | None,
    min_sites: int | None,
    passphrase: PassphraseSource,
) -> AggregateReport:
    state = ws.state()
    r = state.round
    if r >= ws.schedule.rounds:
        raise UsageError(
            f"the federation is complete: round {r} is the final package",
            path=ws.current_package(state),
            code="federation-complete",
            hint="nothing is left to aggregate; run 'flsilo audit' and deploy the final package",
        )
    if not inbox.is_dir():
        raise UsageError(
            "inbox folder does not exist",
            path=inbox,
            code="no-inbox",
            hint="copy the carried bundles (with their .sig files) into it",
        )
    strategy = parse_strategy(strategy_name or ws.config.hub.strategy)
    need = min_sites if min_sites is not None else ws.config.hub.min_sites
    key = load_private_key(ws.key_path, passphrase)
    trust = ws.trust(state)
    package_path = ws.current_package(state)
    package_scan = scan_file(package_path)
    if package_scan.sha256 != state.packages[r]:
        raise VerificationError(
            "the current package no longer matches the event log",
            path=package_path,
            code="package-changed",
            hint="restore packages/ from backup, then run 'flsilo audit'",
        )
    staging = ws.rounds_dir / f"{r:04d}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    result = intake(
        inbox, staging, ws.config, state, trust, package_scan.header, package_scan.manifest.model
    )
    for rejection in result.rejections:
        quarantine(rejection, ws.quarantine_dir, r)
    rows = _rows(result)
    accepted_sites = {c.site for c in result.candidates}
    missing = tuple(s for s in state.active_sites() if s not in accepted_sites)
    if len(result.candidates) < need:
        reject_events = _reject_events(result.rejections, state, r)
        if reject_events:
            ws.log.append(reject_events)
        shutil.rmtree(staging, ignore_errors=True)
        report = AggregateReport(
            r,
            None,
            None,
            strategy_text(strategy),
            tuple(rows),
            missing,
            None,
            None,
            False,
            dp_budget(ws.config),
        )
        raise NotEnoughSites(report, need)

    candidates = sorted(result.candidates, key=lambda c: (c.site, c.verified.sha256))
    inputs = [
        StreamInput(c.staged, c.verified.scan.header.data_start, c.weight) for c in candidates
    ]
    data = combine(package_scan.header, inputs, strategy)
    provenance = mf.Provenance(
        strategy=strategy.name,
        strategy_params=strategy.params(),
        inputs=tuple(
            mf.ProvenanceInput(
                site=c.site,
                sha256=c.verified.sha256,
                samples=c.samples,
                weight=c.weight,
                round=c.verified.manifest.round,
            )
            for c in candidates
        ),
        rejects=tuple(
            mf.ProvenanceReject(site=x.site, sha256=x.sha256, reason=x.error.code)
            for x in sorted(result.rejections, key=lambda x: (x.site, x.sha256, x.error.code))
        ),
    )
    manifest = package_manifest(
        ws.config, package_scan.manifest.model, r + 1, state.packages[r], provenance
    )
    remove_stale_temps(ws.packages_dir)
    new_path, sha = write_package(
        ws.packages_dir, manifest, package_tensors(package_scan.header, data), key
    )
    archive = ws.round_dir(r)
    shutil.rmtree(archive, ignore_errors=True)  # an uncommitted attempt's leftovers
    staging.rename(archive)
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "accept",
            {
                "round": r,
                "site": c.site,
                "sha256": c.verified.sha256,
                "file": c.staged.name,
                "samples": c.samples,
                "weight": c.weight,
                "base_round": c.verified.manifest.round,
                **_dp_fields(c),
            },
        )
        for c in candidates
    ]
    events += _reject_events(result.rejections, state, r)
    events.append(
        (
            "aggregate",
            {
                "round": r,
                "package": new_path.name,
                "sha256": sha,
                "strategy": strategy_text(strategy),
                "inputs": len(candidates),
            },
        )
    )
    ws.log.append(events)
    bundles = [c.verified.manifest.bundle for c in candidates]
    return AggregateReport(
        round=r,
        package=new_path,
        sha256=sha,
        strategy=strategy_text(strategy),
        rows=tuple(rows),
        missing_sites=missing,
        global_accuracy=weighted([b.metrics_global for b in bundles if b]),
        trained_accuracy=weighted([b.metrics_trained for b in bundles if b]),
        final=manifest.package is not None and manifest.package.final,
        dp_budget=dp_budget(ws.config),
    )


def _dp_fields(c: Candidate) -> dict[str, float]:
    """The privacy a DP bundle reports, kept in its accept event for 'hub status'."""
    b = c.verified.manifest.bundle
    if b is None or b.dp is None:
        return {}
    return {"dp_epsilon_round": b.dp.epsilon_round, "dp_epsilon_total": b.dp.epsilon_total}


class NotEnoughSites(WorkspaceError):
    """Fewer verified bundles than --min-sites: nothing is aggregated, rejects are recorded."""

    default_code = "not-enough-sites"

    def __init__(self, report: AggregateReport, need: int) -> None:
        have = sum(1 for row in report.rows if row.verdict.startswith("accepted"))
        missing = ", ".join(report.missing_sites) or "none"
        super().__init__(
            f"only {have} of the {need} required bundles verified for round {report.round}; "
            f"missing: {missing}",
            code="not-enough-sites",
            hint="wait for more bundles (see 'flsilo hub status'), or lower --min-sites",
        )
        self.report = report
