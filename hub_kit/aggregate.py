"""``flsilo aggregate``: verify the inbox, aggregate the round, sign the next package, commit.

``aggregate_round`` reads straight down, inside one hub transaction (lock, log folded once):

1. :func:`hub_kit.roundprep.prepare`: the round to aggregate, its policy (rule, quorum,
   norm gate, share cap), its package checked against the log, and trust;
2. :func:`hub_kit.gates.run_intake`: every inbox entry verified while copied into the
   round's staging folder; when the norm gate or a two-pass rule needs it, a first pass
   reduces each update to a few numbers (gated updates join the rejects); rejects are
   quarantined;
3. :func:`hub_kit.build.build_package`: weights (after any share cap), then the accepted
   bundles are streamed into the next package as it is written into staging
   (:func:`hub_kit.roundmath.compute_round`), and it is signed (the passphrase is asked
   here, only when a signature will be made);
4. :func:`commit`: the round's events are appended to the log (the commit point), then the
   staged files are published. :mod:`hub_kit.commit` documents the order, where later
   outputs (server state, SHA256SUMS, a log-head anchor) slot in, and what a crash leaves.

:func:`preview` runs steps 1-2 with no side effects at all: what would be accepted or
rejected now. Both return an :class:`hub_kit.report.AggregateReport`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from flsilo.format import manifest as mf
from flsilo.format.copynames import misnamed_files
from flsilo.format.tensorsets import ROUND_TRAIN
from flsilo.fs.atomic import BackgroundSync
from flsilo.runtime.faults import fault_point
from flsilo.signing.evalreport import VerifiedReport
from flsilo.signing.keys import PassphraseSource, PrivateKey, load_private_key
from flsilo.tasks import primary_metric
from hub_kit.archive import write_sums
from hub_kit.build import Built, build_package
from hub_kit.commit import Finished, StagedRound, fresh_staging, publish, staged_rounds
from hub_kit.drift import drift_flags
from hub_kit.evaluations import Refused, evaluation_event, take_in
from hub_kit.events import Accept, Aggregate, HubEvent, Reject, ReportedMetrics
from hub_kit.finality import required_evaluations
from hub_kit.gates import Intake, run_intake
from hub_kit.history import chance_classes, history, warnings
from hub_kit.hubeval import TestSetEvaluator, claim_field
from hub_kit.privacy import dp_budget
from hub_kit.report import (
    AggregateReport,
    Shortfall,
    measured_figures,
    site_figures,
    site_rows,
    weighted,
)
from hub_kit.roundmath import RoundView, strategy_record
from hub_kit.roundprep import Prepared, RoundOverrides, prepare, round_policy
from hub_kit.state import HubState
from hub_kit.strategies import strategy_text
from hub_kit.strategies.base import Rule
from hub_kit.verdicts import Candidate, IntakeResult, Rejection
from hub_kit.weighting import dominant_share_warning
from hub_kit.workspace import HubTransaction, HubWorkspace


def aggregate_round(
    hub_dir: Path,
    overrides: RoundOverrides = RoundOverrides(),
    *,
    key: Path | None = None,
    passphrase: PassphraseSource,
    evaluator: TestSetEvaluator | None = None,
) -> AggregateReport:
    """One round (steps 1-4); with ``evaluator`` (``--eval``) the next package is scored on
    the hub's test set and carries the claim (:mod:`hub_kit.hubeval`)."""
    ws = HubWorkspace.open(hub_dir)
    if key is not None:  # the hub key, when it is not where 'hub init' recorded it
        ws.key_path = key
    policy = round_policy(ws, overrides)
    inbox = overrides.inbox
    with ws.transaction("aggregate") as tx, BackgroundSync() as sync:
        prep = prepare(ws, tx.state, inbox, policy)
        if evaluator is not None:  # bad test data fails here, before anything is written
            evaluator.check(prep.package.manifest)
        staged = fresh_staging(ws.rounds_dir, prep.round)
        # archive copies reach the disk while the next bundles are read and the round is
        # computed; every one is on disk before the commit (sync.join)
        taken = run_intake(prep, staged, staged.root / "trainable-base", sync)
        fault_point("aggregate:staged")
        if len(taken.candidates) < policy.need():
            sync.join()
            _record_rejects_only(tx, prep, taken.result, passphrase)
            shutil.rmtree(staged.root, ignore_errors=True)
            return _report(prep, taken, None, _shortfall(prep, taken.result))
        signing_key = load_private_key(ws.key_path, passphrase)
        reports = take_in(ws, tx.state, prep.inbox, staged.archive)
        built = build_package(prep, taken, staged, signing_key, evaluator)
        fault_point("aggregate:built")
        sync.join()
        commit(tx, prep, taken, built, staged, signing_key, reports[0])
    return _report(prep, taken, built, evaluations=reports)


def finish_interrupted(hub_dir: Path) -> Finished | None:
    """An interrupted aggregate's committed round, published now (and nothing else done);
    None, after only a folder listing, when no round waits to be published."""
    ws = HubWorkspace.open(hub_dir)
    if not staged_rounds(ws.rounds_dir):
        return None
    with ws.transaction("aggregate") as tx:  # entering it publishes what the log committed
        if not tx.finished:
            return None
        return Finished(tx.finished[-1], ws.current_package(tx.state))


def preview(
    hub_dir: Path,
    overrides: RoundOverrides = RoundOverrides(),
    evaluator: TestSetEvaluator | None = None,
) -> AggregateReport:
    """What ``aggregate`` would accept and reject now; writes nothing and takes no lock.

    The bundles it would accept are measured (update norms, cosines to the median update)
    but no gate is applied: the report shows the round's cosine gate beside the cosines."""
    ws = HubWorkspace.open(hub_dir)
    policy = round_policy(ws, overrides)
    prep = prepare(ws, ws.state(), overrides.inbox, policy)
    if evaluator is not None:  # the test set is checked; no package is scored
        evaluator.check(prep.package.manifest)
    with tempfile.TemporaryDirectory(prefix="flsilo-preview-") as scratch:
        return _report(prep, run_intake(prep, None, Path(scratch) / "trainable-base"), None)


def commit(
    tx: HubTransaction,
    prep: Prepared,
    taken: Intake,
    built: Built,
    staged: StagedRound,
    key: PrivateKey,
    reports: list[VerifiedReport],
) -> None:
    """Step 4: the round's SHA256SUMS, its events appended to the (signed) log: the commit;
    then the staged files are published. Sites' evaluation reports archived with the round
    get an ``evaluation`` event each."""
    known = {c.verified.path.name: c.verified.sha256 for c in taken.candidates}
    write_sums(staged.archive, known | {v.path.name: v.sha256 for v in reports})
    events = _commit_events(prep, taken, built)
    events += [evaluation_event(v, prep.round) for v in reports]
    fault_point("aggregate:commit")
    tx.commit(events, key)
    fault_point("aggregate:committed")
    publish(staged, prep.ws.root, prep.ws.round_dir(prep.round))
    fault_point("aggregate:published")


def _record_rejects_only(
    tx: HubTransaction, prep: Prepared, result: IntakeResult, passphrase: PassphraseSource
) -> None:
    """Not enough sites: only the new rejects are logged (the log is signed, so the key is
    unlocked for that alone)."""
    reject_events = _reject_events(result.rejections, prep.state, prep.round)
    if reject_events:
        tx.commit(reject_events, load_private_key(prep.ws.key_path, passphrase))


def _shortfall(prep: Prepared, result: IntakeResult) -> Shortfall:
    policy = prep.policy
    hint = "wait for more bundles (see 'flsilo hub status'), or lower --min-sites"
    done = {prep.state.accepted.get(s.sha256) for s in result.skipped}
    if result.skipped and not result.candidates and not result.rejections and None not in done:
        hint = (  # a rerun after the round that used this inbox was done
            f"every bundle in the inbox was already aggregated (round "
            f"{max(r for r in done if r is not None)} is done); carry round {prep.round}'s "
            "bundles, then run aggregate again"
        )
    elif len(enrolled := prep.state.active_sites()) < policy.need():
        hint = (  # no bundle can be missing: the round waits for sites nobody enrolled
            f"only {len(enrolled)} site(s) are enrolled and active and the round needs "
            f"{policy.need()} bundles: enrol more sites ('flsilo hub enroll'), or lower "
            "--min-sites"
        )
    elif policy.need() > policy.min_sites:
        hint = (
            f"{strategy_text(policy.rule)} is defined for {policy.need()} or more sites; wait "
            "for more bundles or choose another --strategy"
        )
    return Shortfall(policy.need(), hint)


def _report(
    prep: Prepared,
    taken: Intake,
    built: Built | None,
    shortfall: Shortfall | None = None,
    *,
    evaluations: tuple[list[VerifiedReport], list[Refused]] | None = None,
) -> AggregateReport:
    candidates = taken.candidates
    events = prep.ws.log.read()
    accepted_sites = {c.site for c in candidates}
    missing = tuple(s for s in prep.state.active_sites() if s not in accepted_sites)
    figures = measured_figures(taken.norms, taken.cosines)  # gated rejects' figures too
    if built and built.figures:
        figures |= site_figures(
            candidates, built.weights, built.capped, built.figures, taken.cosines
        )
    bundles = [c.verified.manifest.bundle for c in candidates]
    package = built.manifest.package if built else None
    policy = prep.policy
    metric = primary_metric(prep.ws.config.plan.task)
    return AggregateReport(
        round=prep.round,
        package=built.final_path if built else None,
        sha256=built.sha256 if built else None,
        strategy=shown_strategy(taken.view, policy.rule),
        rows=tuple(site_rows(taken.result, figures, _drift(prep, candidates), metric)),
        missing_sites=missing,
        global_accuracy=weighted([b.metrics_global for b in bundles if b]),
        trained_accuracy=weighted([b.metrics_trained for b in bundles if b]),
        metric=metric,
        global_primary=weighted([b.metrics_global for b in bundles if b], metric),
        trained_primary=weighted([b.metrics_trained for b in bundles if b], metric),
        final=package is not None and package.final,
        hub_evaluation=package.hub_evaluation if package else None,
        dp_budget=dp_budget(prep.ws.config),
        norm_gate=policy.norm_gate if built else None,
        cosine_gate=policy.cosine_gate,
        max_weight_share=policy.max_weight_share if built else None,
        server_optimizer=built.server if built else "none",
        merge="fisher" if prep.fisher else "average",
        shortfall=shortfall,
        evaluations=tuple(v.path.name for v in evaluations[0]) if evaluations else (),
        misnamed=misnamed_files(prep.inbox),
        refused_evaluations=tuple(
            f"{r.path.name}: error[{r.code}]: {r.reason}" for r in evaluations[1]
        )
        if evaluations
        else (),
        weight_warning=dominant_share_warning(
            [c.site for c in candidates],
            built.weights if built else [c.weight for c in candidates],
            policy.max_weight_share,
        )
        if taken.view.streams  # weight rounds: a statistics round is an exact sum
        else None,
        weight_round=taken.view.streams,
        learning_warnings=tuple(
            warnings(
                history(events),
                chance_classes(prep.ws.config.plan.task, prep.ws.config.classes),
                metric,
            )
        ),
        require_evaluations=required_evaluations(events),
    )


def _drift(prep: Prepared, candidates: list[Candidate]) -> dict[str, dict[str, Any]] | None:
    """Weight rounds: each accepted site's input drift against the others (hub_kit.drift)."""
    if prep.plan.kind != ROUND_TRAIN:
        return None
    summaries = {c.site: c.verified.manifest.bundle.inputs for c in candidates}  # type: ignore[union-attr]
    flags = drift_flags(summaries, prep.ws.config.hub.drift_threshold)
    return {site: d.to_dict() for site, d in flags.items()}


def _commit_events(prep: Prepared, taken: Intake, built: Built) -> list[HubEvent]:
    r, policy = prep.round, prep.policy
    events: list[HubEvent] = [
        _accept(r, c, w, cap)
        for c, w, cap in zip(taken.candidates, built.weights, built.capped, strict=True)
    ]
    events += _reject_events(taken.result.rejections, prep.state, r)
    step = built.provenance.server
    events.append(
        Aggregate(
            round=r,
            package=built.final_path.name,
            sha256=built.sha256,
            data_sha256=built.data_sha256,
            strategy=shown_strategy(taken.view, policy.rule),
            inputs=len(taken.candidates),
            merge=built.provenance.merge,
            server_optimizer=step.optimizer if step else "none",
            server_state=step.state_file if step else None,
            server_state_sha256=step.state_out_sha256 if step else None,
            norm_gate=policy.norm_gate,
            cosine_gate=policy.cosine_gate,
            max_weight_share=policy.max_weight_share,
            hub_evaluation=claim_field(built.manifest.package),
        )
    )
    return events


def _reject_events(rejections: list[Rejection], state: HubState, round_: int) -> list[HubEvent]:
    return [
        Reject(
            round=round_,
            site=r.site,
            sha256=r.sha256,
            file=r.inbox_path.name,
            code=r.error.code,
            reason=r.error.message,
        )
        for r in rejections
        if (round_, r.sha256, r.error.code) not in state.rejected  # already on record
    ]


def _accept(round_: int, c: Candidate, weight: float, capped: bool) -> Accept:
    """The accept event: the bundle, its weight, what the site said about the models (for
    'flsilo hub history' to read from the log) and the privacy a DP bundle reports (for
    'hub status' and for the check that a site's later bundles never report less,
    hub_kit.privacy.went_back)."""
    b = c.verified.manifest.bundle
    dp = b.dp if b is not None else None
    return Accept(
        round=round_,
        site=c.site,
        sha256=c.verified.sha256,
        file=c.verified.path.name,
        samples=c.samples,
        weight=weight,
        base_round=c.verified.manifest.round,
        dp_epsilon_round=dp.epsilon_round if dp else None,
        dp_epsilon_total=dp.epsilon_total if dp else None,
        dp_rounds=dp.rounds if dp else None,
        metrics_global=_reported(b.metrics_global if b else None),
        metrics_trained=_reported(b.metrics_trained if b else None),
        weight_capped=capped,
    )


def _reported(m: mf.Metrics | None) -> ReportedMetrics | None:
    if m is None:
        return None
    values = dict(m.values) if m.values else None
    return ReportedMetrics(accuracy=m.accuracy, loss=m.loss, samples=m.samples, values=values)


def shown_strategy(view: RoundView, rule: Rule) -> str:
    """The strategy as reports and the log name it (a closed-form round names its solver)."""
    return strategy_text(rule) if view.streams else strategy_record(view, rule)[0]
