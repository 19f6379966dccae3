"""``flsilo aggregate``: verify the inbox, aggregate the round, sign the next package, commit.

Order of work, under the workspace lock:
1. intake: every inbox bundle is verified while copied into ``rounds/NNNN.staging``;
2. first pass, when the norm gate or a two-pass rule needs it: per-site statistics (update
   norms, the Gram matrix of the updates); gated updates join the rejects;
3. quarantine copies and reason files for rejects; the weight-share cap clips weights;
4. stream the accepted bundles into the next package as it is written, and sign it;
5. move the staging folder to ``rounds/NNNN``;
6. append accept/reject/aggregate events to the log in one atomic replace: the commit.
A crash before step 6 leaves the log (and so the hub's state) as it was; a rerun redoes the
work from the untouched inbox and overwrites the uncommitted leftovers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flsilo import manifest as mf
from flsilo.artifact import scan_file, sig_path
from flsilo.atomic import WorkspaceLock, remove_stale_temps
from flsilo.errors import PolicyError, UsageError, VerificationError, WorkspaceError
from flsilo.keys import PassphraseSource, load_private_key
from flsilo.tensorfile import Header, RawTensor
from hub_kit.archive import write_sums
from hub_kit.intake import Candidate, IntakeResult, Rejection, intake, quarantine
from hub_kit.packaging import package_manifest, write_package_stream
from hub_kit.privacy import dp_budget
from hub_kit.roundmath import (
    RoundView,
    gram_of,
    produce,
    round_view,
    strategy_record,
    stream_input,
)
from hub_kit.server_optimizers import ServerOptimizer, server_optimizer_for
from hub_kit.server_state import STATE_DIR, ServerRun, previous_state, state_name
from hub_kit.strategies import parse_strategy, strategy_text
from hub_kit.strategies.base import Rule, is_two_pass
from hub_kit.streaming import (
    SiteFigures,
    StreamInput,
    Writer,
    aggregate_stream,
    first_pass,
    run_two_pass,
)
from hub_kit.weighting import cap_shares, check_share_cap, norm_gate, shares
from hub_kit.workspace import HubState, HubWorkspace, release_policy


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
    share: float | None = None
    """This site's share of the total weight, after any cap."""
    update_norm: float | None = None
    """L2 norm of (bundle - the round's package), over every float tensor."""
    distance: float | None = None
    """L2 distance from this site's update to the aggregated update."""
    capped: bool = False


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
    max_weight_share: float | None = None
    server_optimizer: str = "none"
    merge: str = "average"

    def to_dict(self) -> dict[str, Any]:
        return mf.to_jsonable(self) | {"package": str(self.package) if self.package else None}


def package_tensors(header: Header, data: bytearray) -> dict[str, RawTensor]:
    view = memoryview(data)
    return {t.name: RawTensor(t.dtype, t.shape, view[t.begin : t.end]) for t in header.tensors}


def combine(
    header: Header,
    base: StreamInput,
    inputs: list[StreamInput],
    rule: Rule,
    write: Writer,
    *,
    fisher: bool = False,
    server: ServerRun | None = None,
) -> list[SiteFigures]:
    """Aggregate ``inputs`` (ordered by site) laid out like ``header`` into ``write``.

    A two-pass rule first reduces the inputs to their Gram matrix; returns the figures.
    ``fisher`` merges by the inputs' Fisher diagonals; ``server`` then applies the server
    optimizer and collects its new state.
    """
    coefficients = None
    if is_two_pass(rule):
        gram = first_pass(header.tensors, base, inputs)
        weights = np.array([i.weight for i in inputs], dtype=np.float64)
        coefficients = run_two_pass(rule, gram, weights)  # type: ignore[arg-type]
    return aggregate_stream(
        header.tensors, base, inputs, rule, write, coefficients, fisher=fisher, server=server
    )


def open_server_run(
    hub_root: Path,
    opt: ServerOptimizer,
    view: RoundView,
    parent: mf.Provenance | None,
) -> tuple[ServerRun | None, str | None]:
    """The round's server step, reading the state the parent round wrote for the same optimizer.

    None for a round without a server optimizer, and for statistics rounds (a solved head).
    """
    if not opt.active or not view.streams:
        return None, None
    previous = None
    state_in = None
    if parent is not None and parent.server is not None and parent.server.optimizer == opt.name:
        state_in = parent.server.state_out_sha256
        previous = previous_state(hub_root / STATE_DIR / parent.server.state_file, state_in)
    run = ServerRun(
        opt, previous[0] if previous else None, previous[1] if previous else None, view.layout
    )
    return run, state_in


def open_replay_server(
    hub_root: Path, federation: str, round_: int, view: RoundView, step: mf.ServerStep | None
) -> ServerRun | None:
    """The server step a provenance records, rebuilt to recompute its round (audit --replay)."""
    if step is None:
        return None
    opt = ServerOptimizer(name=step.optimizer, **step.params)
    previous = None
    if step.state_in_sha256 is not None:
        path = hub_root / STATE_DIR / state_name(federation, round_)
        previous = previous_state(path, step.state_in_sha256)
    return ServerRun(
        opt, previous[0] if previous else None, previous[1] if previous else None, view.layout
    )


def _server_pass(
    ws: HubWorkspace, round_: int, run: ServerRun | None, compute: Callable[[Writer], object]
) -> str | None:
    """Run the aggregation once without writing, to fix the new server state; write it.

    The package's provenance names the state's sha256 and is written before its tensors, so
    the state is computed first; the package pass then recomputes the same values.
    """
    if run is None:
        return None
    compute(lambda _chunk: None)
    (ws.root / STATE_DIR).mkdir(exist_ok=True)
    return run.write(ws.root / STATE_DIR / state_name(ws.config.federation, round_ + 1))


def _server_fields(provenance: mf.Provenance) -> dict[str, Any]:
    """What the log's aggregate event says about the merge and the server step."""
    step = provenance.server
    return {
        "merge": provenance.merge,
        "server_optimizer": step.optimizer if step else "none",
        "server_state": step.state_file if step else None,
        "server_state_sha256": step.state_out_sha256 if step else None,
    }


def weighted(metrics: list[mf.Metrics | None]) -> float | None:
    """Sample-weighted accuracy across sites that reported it."""
    reported = [m for m in metrics if m is not None]
    total = sum(m.samples for m in reported)
    return sum(m.accuracy * m.samples for m in reported) / total if total else None


def _rows(result: IntakeResult, figures: dict[str, dict[str, Any]] | None = None) -> list[SiteRow]:
    rows = []
    for c in result.candidates:
        b = c.verified.manifest.bundle
        assert b is not None
        fields: dict[str, Any] = {
            "site": c.site,
            "file": c.inbox_path.name,
            "verdict": "accepted" if c.age == 0 else f"accepted (late by {c.age})",
            "reason": None,
            "code": None,
            "hint": None,
            "samples": b.num_samples,
            "weight": c.weight,
            "global_accuracy": b.metrics_global.accuracy if b.metrics_global else None,
            "trained_accuracy": b.metrics_trained.accuracy if b.metrics_trained else None,
            "dp_epsilon_total": b.dp.epsilon_total if b.dp else None,
        }
        fields.update((figures or {}).get(c.verified.sha256, {}))
        rows.append(SiteRow(**fields))
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


def _reported_metrics(bundle: mf.BundleInfo | None) -> dict[str, Any]:
    """What the site said about the models, for 'flsilo hub history' to read from the log."""
    out: dict[str, Any] = {}
    for key, m in (
        ("metrics_global", bundle.metrics_global if bundle else None),
        ("metrics_trained", bundle.metrics_trained if bundle else None),
    ):
        if m is not None:
            out[key] = {"accuracy": m.accuracy, "loss": m.loss, "samples": m.samples}
    return out


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
    norm_gate: float | None = None,
    max_weight_share: float | None = None,
    key: Path | None = None,
    server: ServerOptimizer | None = None,
    passphrase: PassphraseSource,
) -> AggregateReport:
    ws = HubWorkspace.open(hub_dir)
    if key is not None:  # the hub key, when it is not where 'hub init' recorded it
        ws.key_path = key
    with WorkspaceLock(ws.root, "hub workspace"):
        policy = RoundPolicy(
            rule=parse_strategy(strategy or ws.config.hub.strategy),
            min_sites=min_sites if min_sites is not None else ws.config.hub.min_sites,
            norm_gate=norm_gate if norm_gate is not None else ws.config.hub.norm_gate,
            max_weight_share=max_weight_share
            if max_weight_share is not None
            else ws.config.hub.max_weight_share,
            server=server if server is not None else server_optimizer_for(ws.config.hub),
        )
        return _aggregate_locked(ws, inbox or ws.inbox, policy, passphrase)


@dataclass(frozen=True)
class RoundPolicy:
    """How this round is aggregated: the rule, the quorum, the norm gate and the share cap."""

    rule: Rule
    min_sites: int
    norm_gate: float | None
    max_weight_share: float | None
    server: ServerOptimizer = field(default_factory=ServerOptimizer)

    def need(self) -> int:
        rule_min = self.rule.min_sites() if is_two_pass(self.rule) else 1  # type: ignore[union-attr]
        return max(self.min_sites, rule_min)


def _check_round(ws: HubWorkspace, state: HubState, inbox: Path, policy: RoundPolicy) -> None:
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
    if policy.norm_gate is not None and not policy.norm_gate > 0:
        raise UsageError(
            f"--norm-gate {policy.norm_gate:g} must be a positive multiple of the median norm",
            code="bad-norm-gate",
            hint="e.g. --norm-gate 3 quarantines updates over 3x the median update norm",
        )
    if policy.max_weight_share is not None:
        check_share_cap(policy.max_weight_share)


def _inputs(
    candidates: list[Candidate], view: RoundView, weights: list[float] | None = None
) -> list[StreamInput]:
    return [
        stream_input(c.staged, c.verified.scan.header, c.weight if weights is None else w, view)
        for c, w in zip(candidates, weights or [0.0] * len(candidates), strict=True)
    ]


def _gate(
    candidates: list[Candidate],
    gram: np.ndarray,
    multiple: float,
    result: IntakeResult,
) -> tuple[list[Candidate], np.ndarray]:
    """Move updates whose norm exceeds ``multiple`` x the median to the rejections."""
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0)).tolist()
    over, median = norm_gate(norms, multiple)
    keep = [i for i, o in enumerate(over) if not o]
    for i in (i for i, o in enumerate(over) if o):
        c = candidates[i]
        error = PolicyError(
            f"update norm {norms[i]:.4g} exceeds {multiple:g} x the median norm {median:.4g}",
            path=c.inbox_path,
            code="norm-gate",
            hint="ask the site whether training diverged or its data changed; "
            "if the update is genuine, raise --norm-gate",
        )
        result.rejections.append(Rejection(c.inbox_path, c.site, c.verified.sha256, error))
        c.staged.unlink(missing_ok=True)
        sig_path(c.staged).unlink(missing_ok=True)
    return [candidates[i] for i in keep], gram[np.ix_(keep, keep)]


def _weights(candidates: list[Candidate], cap: float | None) -> tuple[list[float], list[bool]]:
    raw = [c.weight for c in candidates]
    if cap is None:
        return raw, [False] * len(raw)
    return cap_shares(raw, cap)


def _aggregate_locked(
    ws: HubWorkspace, inbox: Path, policy: RoundPolicy, passphrase: PassphraseSource
) -> AggregateReport:
    state = ws.state()
    r = state.round
    _check_round(ws, state, inbox, policy)
    check_release_officers(ws, state)
    rule = policy.rule
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
    assert package_scan.manifest.package is not None
    plan = package_scan.manifest.package.plan
    assert plan is not None
    fisher = plan.merge == "fisher"
    if fisher and is_two_pass(rule):
        raise UsageError(
            f"this round merges by Fisher, which {strategy_text(rule)} cannot do",
            code="bad-strategy",
            hint="aggregate a Fisher round with a coordinate-wise strategy (fedavg)",
        )
    result = intake(
        inbox,
        staging,
        ws.config,
        state,
        trust,
        package_scan.header,
        package_scan.manifest.model,
        plan,
    )
    view = round_view(
        package_path,
        package_scan.header,
        package_scan.manifest.model,
        plan,
        ws.rounds_dir / f"{r:04d}.trainable-base",
    )
    candidates = sorted(result.candidates, key=lambda c: (c.site, c.verified.sha256))
    gram = None
    gated = view.streams and (policy.norm_gate or is_two_pass(rule))
    if len(candidates) >= policy.need() and gated:
        gram = gram_of(view, _inputs(candidates, view), pairwise=is_two_pass(rule))
        if policy.norm_gate:
            candidates, gram = _gate(candidates, gram, policy.norm_gate, result)
    result.candidates = candidates
    for rejection in result.rejections:
        quarantine(rejection, ws.quarantine_dir, r)
    accepted_sites = {c.site for c in candidates}
    missing = tuple(s for s in state.active_sites() if s not in accepted_sites)
    if len(candidates) < policy.need():
        reject_events = _reject_events(result.rejections, state, r)
        if reject_events:
            ws.commit(reject_events, load_private_key(ws.key_path, passphrase))  # signs the log
        shutil.rmtree(staging, ignore_errors=True)
        report = AggregateReport(
            r,
            None,
            None,
            strategy_text(rule),
            tuple(_rows(result)),
            missing,
            None,
            None,
            False,
            dp_budget(ws.config),
        )
        hint = None
        if policy.need() > policy.min_sites:
            hint = (
                f"{strategy_text(rule)} is defined for {policy.need()} or more sites; wait for "
                "more bundles or choose another --strategy"
            )
        raise NotEnoughSites(report, policy.need(), hint)
    if policy.max_weight_share is not None:
        check_share_cap(policy.max_weight_share, len(candidates))
    # Every refusal is behind us: the round ends in a signature, so unlock the key now.
    key = load_private_key(ws.key_path, passphrase)
    weights, capped = _weights(candidates, policy.max_weight_share)
    inputs = _inputs(candidates, view, weights)
    coefficients = None
    if view.streams and is_two_pass(rule):
        assert gram is not None
        coefficients = run_two_pass(rule, gram, np.array(weights))  # type: ignore[arg-type]
    strategy_name, strategy_params = strategy_record(view, rule)
    shown = strategy_text(rule) if view.streams else strategy_name
    provenance = mf.Provenance(
        strategy=strategy_name,
        strategy_params=strategy_params,
        inputs=tuple(
            mf.ProvenanceInput(
                site=c.site,
                sha256=c.verified.sha256,
                samples=c.samples,
                weight=w,
                round=c.verified.manifest.round,
            )
            for c, w in zip(candidates, weights, strict=True)
        ),
        rejects=tuple(
            mf.ProvenanceReject(site=x.site, sha256=x.sha256, reason=x.error.code)
            for x in sorted(result.rejections, key=lambda x: (x.site, x.sha256, x.error.code))
        ),
        merge="fisher" if fisher else "average",
    )
    run, state_in = open_server_run(
        ws.root, policy.server, view, package_scan.manifest.package.provenance
    )

    def compute(write: Writer) -> list[SiteFigures]:
        return produce(view, inputs, rule, write, coefficients, fisher=fisher, server=run)

    try:
        state_out = _server_pass(ws, r, run, compute)
        if run is not None and state_out is not None:
            step = mf.ServerStep(
                policy.server.name,
                policy.server.params(),
                state_in,
                state_out,
                state_name(ws.config.federation, r + 1),
            )
            provenance = replace(provenance, server=step)
        manifest = package_manifest(
            ws.config,
            package_scan.manifest.model,
            r + 1,
            state.packages[r],
            provenance,
            release=release_policy(state, ws.config.hub.release_signers),
            log_head=state.log_head,  # the head before this round's commit
            key_chain=tuple(state.rotations),
        )
        remove_stale_temps(ws.packages_dir)
        new_path, sha, figures = write_package_stream(
            ws.packages_dir, manifest, package_scan.header.tensors, compute, key
        )
    finally:
        if run is not None:
            run.close()
    if view.base.path is not None and view.base.path != package_path:
        view.base.path.unlink(missing_ok=True)  # a partial round's scratch base
    write_sums(staging, {c.staged.name: c.verified.sha256 for c in candidates})
    archive = ws.round_dir(r)
    shutil.rmtree(archive, ignore_errors=True)  # an uncommitted attempt's leftovers
    staging.rename(archive)
    events = _commit_events(
        r, candidates, weights, capped, result, state, shown, new_path, sha, policy
    )
    events[-1][1].update(_server_fields(provenance))
    ws.commit(events, key)
    bundles = [c.verified.manifest.bundle for c in candidates]
    return AggregateReport(
        round=r,
        package=new_path,
        sha256=sha,
        strategy=shown,
        rows=tuple(
            _rows(result, _figures(candidates, weights, capped, figures) if figures else None)
        ),
        missing_sites=missing,
        global_accuracy=weighted([b.metrics_global for b in bundles if b]),
        trained_accuracy=weighted([b.metrics_trained for b in bundles if b]),
        final=manifest.package is not None and manifest.package.final,
        dp_budget=dp_budget(ws.config),
        norm_gate=policy.norm_gate,
        max_weight_share=policy.max_weight_share,
        server_optimizer=policy.server.text() if run is not None else "none",
        merge=provenance.merge,
    )


def _figures(
    candidates: list[Candidate],
    weights: list[float],
    capped: list[bool],
    figures: list[SiteFigures],
) -> dict[str, dict[str, Any]]:
    share = shares(weights)
    return {
        c.verified.sha256: {
            "weight": w,
            "share": s,
            "capped": cap,
            "update_norm": f.update_norm,
            "distance": f.distance,
        }
        for c, w, s, cap, f in zip(candidates, weights, share, capped, figures, strict=True)
    }


def _commit_events(
    r: int,
    candidates: list[Candidate],
    weights: list[float],
    capped: list[bool],
    result: IntakeResult,
    state: HubState,
    shown: str,
    new_path: Path,
    sha: str,
    policy: RoundPolicy,
) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "accept",
            {
                "round": r,
                "site": c.site,
                "sha256": c.verified.sha256,
                "file": c.staged.name,
                "samples": c.samples,
                "weight": w,
                "base_round": c.verified.manifest.round,
                **_dp_fields(c),
                **_reported_metrics(c.verified.manifest.bundle),
            }
            | ({"weight_capped": True} if cap else {}),
        )
        for c, w, cap in zip(candidates, weights, capped, strict=True)
    ]
    events += _reject_events(result.rejections, state, r)
    events.append(
        (
            "aggregate",
            {
                "round": r,
                "package": new_path.name,
                "sha256": sha,
                "strategy": shown,
                "inputs": len(candidates),
            }
            | ({"norm_gate": policy.norm_gate} if policy.norm_gate is not None else {})
            | (
                {"max_weight_share": policy.max_weight_share}
                if policy.max_weight_share is not None
                else {}
            ),
        )
    )
    return events


def _dp_fields(c: Candidate) -> dict[str, float]:
    """The privacy a DP bundle reports, kept in its accept event for 'hub status'."""
    b = c.verified.manifest.bundle
    if b is None or b.dp is None:
        return {}
    return {"dp_epsilon_round": b.dp.epsilon_round, "dp_epsilon_total": b.dp.epsilon_total}


def check_release_officers(ws: HubWorkspace, state: HubState) -> None:
    """The final package must name at least --release-signers officers, or none could sign it."""
    need = ws.config.hub.release_signers
    have = len(state.release_officers())
    if state.round + 1 >= ws.schedule.rounds and have < need:
        raise UsageError(
            f"the final package needs {need} release officers, but {have} are enrolled",
            code="release-officers-missing",
            hint=f"enrol them first: flsilo hub enroll {ws.root} OFFICER OFFICER.pub "
            "--fingerprint SHA256:... --role release",
        )


class NotEnoughSites(WorkspaceError):
    """Fewer verified bundles than --min-sites: nothing is aggregated, rejects are recorded."""

    default_code = "not-enough-sites"

    def __init__(self, report: AggregateReport, need: int, hint: str | None = None) -> None:
        have = sum(1 for row in report.rows if row.verdict.startswith("accepted"))
        missing = ", ".join(report.missing_sites) or "none"
        super().__init__(
            f"only {have} of the {need} required bundles verified for round {report.round}; "
            f"missing: {missing}",
            code="not-enough-sites",
            hint=hint or "wait for more bundles (see 'flsilo hub status'), or lower --min-sites",
        )
        self.report = report
