"""``flsilo aggregate``: verify the inbox, aggregate the round, sign the next package, commit.

``aggregate_round`` reads straight down, inside one hub transaction (lock, log folded once):

1. :func:`prepare`: the round to aggregate, its policy (rule, quorum, norm gate, share cap),
   its package checked against the log, and trust;
2. :func:`run_intake`: every inbox entry verified while copied into the round's staging
   folder; when the norm gate or a two-pass rule needs it, a first pass reduces each
   update to a few numbers (gated updates join the rejects); rejects are quarantined;
3. :func:`build_package`: weights (after any share cap), then the accepted bundles are
   streamed into the next package as it is written into staging, and it is signed (the
   passphrase is asked here, only when a signature will be made);
4. :func:`commit`: the round's events are appended to the log (the commit point), then the
   staged files are published. :mod:`hub_kit.commit` documents the order, where later
   outputs (server state, SHA256SUMS, a log-head anchor) slot in, and what a crash leaves.

:func:`preview` runs steps 1-2 with no side effects at all: what would be accepted or
rejected now.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flsilo import manifest as mf
from flsilo.artifact import Scan, run_on_chunk, scan_file, sig_path
from flsilo.atomic import BackgroundSync
from flsilo.codes import Code
from flsilo.errors import PolicyError, UsageError, VerificationError, WorkspaceError
from flsilo.faults import fault_point
from flsilo.keys import PassphraseSource, PrivateKey, load_private_key
from flsilo.tensorfile import Header, RawTensor
from flsilo.trust import AllowedSigners
from hub_kit.archive import write_sums
from hub_kit.commit import StagedRound, fresh_staging, publish
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
from hub_kit.workspace import HubState, HubTransaction, HubWorkspace, release_policy


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
    shortfall: Shortfall | None = None
    """Set when fewer bundles verified than the round needs: nothing was aggregated."""

    def to_dict(self) -> dict[str, Any]:
        return mf.to_jsonable(self) | {"package": str(self.package) if self.package else None}

    def shortfall_error(self) -> WorkspaceError | None:
        """The one-line error a round without enough bundles ends with; None for a done round."""
        if self.shortfall is None:
            return None
        have = sum(1 for row in self.rows if row.verdict.startswith("accepted"))
        missing = ", ".join(self.missing_sites) or "none"
        return WorkspaceError(
            f"only {have} of the {self.shortfall.need} required bundles verified for round "
            f"{self.round}; missing: {missing}",
            code=Code.NOT_ENOUGH_SITES,
            hint=self.shortfall.hint,
        )


@dataclass(frozen=True)
class Shortfall:
    """Why a round was not aggregated: it needs ``need`` verified bundles (and what to do)."""

    need: int
    hint: str


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
    staged: StagedRound,
    federation: str,
    round_: int,
    run: ServerRun | None,
    compute: Callable[[Writer], object],
) -> str | None:
    """Run the aggregation once without writing, to fix the new server state; stage it.

    The package's provenance names the state's sha256 and is written before its tensors, so
    the state is computed first; the package pass then recomputes the same values. The
    state file is published with the package, after the commit (hub_kit.commit).
    """
    if run is None:
        return None
    compute(lambda _chunk: None)
    return run.write(staged.output(f"{STATE_DIR}/{state_name(federation, round_ + 1)}"))


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


@dataclass(frozen=True)
class Prepared:
    """Everything the round's steps need, read once at the start (under the lock)."""

    ws: HubWorkspace
    state: HubState
    round: int
    inbox: Path
    policy: RoundPolicy
    trust: AllowedSigners
    package_path: Path
    package: Scan

    @property
    def fisher(self) -> bool:
        return self.plan.merge == "fisher"

    @property
    def plan(self) -> mf.Plan:
        assert self.package.manifest.package is not None
        plan = self.package.manifest.package.plan
        assert plan is not None  # only a final package has none, and it is never aggregated
        return plan


@dataclass
class Intake:
    """Step 2's outcome: verdicts (candidates sorted by site), the round's view of the
    bundles (whole, partial or statistics) and the first pass, if any."""

    result: IntakeResult
    view: RoundView
    gram: np.ndarray | None = None

    @property
    def candidates(self) -> list[Candidate]:
        return self.result.candidates


@dataclass(frozen=True)
class Built:
    """The signed next package, staged but not yet visible."""

    staged_path: Path
    final_path: Path
    sha256: str
    data_sha256: str
    manifest: mf.Manifest
    weights: list[float]
    capped: list[bool]
    figures: list[SiteFigures]
    provenance: mf.Provenance
    server: str


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
    policy = round_policy(ws, strategy, min_sites, norm_gate, max_weight_share, server)
    with ws.transaction("aggregate") as tx, BackgroundSync() as sync:
        prep = prepare(ws, tx.state, inbox, policy)
        staged = fresh_staging(ws.rounds_dir, prep.round)
        # archive copies reach the disk while the next bundles are read and the round is
        # computed; every one is on disk before the commit (sync.join)
        taken = run_intake(prep, staged, staged.root / "trainable-base", sync)
        fault_point("aggregate:staged")
        if len(taken.candidates) < policy.need():
            sync.join()
            _record_rejects_only(tx, prep, taken.result, passphrase)
            shutil.rmtree(staged.root, ignore_errors=True)
            return _report(prep, taken, None, _shortfall(prep))
        signing_key = load_private_key(ws.key_path, passphrase)
        built = build_package(prep, taken, staged, signing_key)
        fault_point("aggregate:built")
        sync.join()
        commit(tx, prep, taken, built, staged, signing_key)
    return _report(prep, taken, built)


def preview(
    hub_dir: Path,
    *,
    inbox: Path | None = None,
    strategy: str | None = None,
    min_sites: int | None = None,
    norm_gate: float | None = None,
    max_weight_share: float | None = None,
    server: ServerOptimizer | None = None,
) -> AggregateReport:
    """What ``aggregate`` would accept and reject now; writes nothing and takes no lock."""
    ws = HubWorkspace.open(hub_dir)
    policy = round_policy(ws, strategy, min_sites, norm_gate, max_weight_share, server)
    prep = prepare(ws, ws.state(), inbox, policy)
    with tempfile.TemporaryDirectory(prefix="flsilo-preview-") as scratch:
        return _report(prep, run_intake(prep, None, Path(scratch) / "trainable-base"), None)


def round_policy(
    ws: HubWorkspace,
    strategy: str | None,
    min_sites: int | None,
    norm_gate: float | None,
    max_weight_share: float | None,
    server: ServerOptimizer | None = None,
) -> RoundPolicy:
    """The federation's defaults with this round's overrides, checked."""
    hub = ws.config.hub
    policy = RoundPolicy(
        rule=parse_strategy(strategy or hub.strategy),
        min_sites=min_sites if min_sites is not None else hub.min_sites,
        norm_gate=norm_gate if norm_gate is not None else hub.norm_gate,
        max_weight_share=max_weight_share if max_weight_share is not None else hub.max_weight_share,
        server=server if server is not None else server_optimizer_for(hub),
    )
    if policy.norm_gate is not None and not policy.norm_gate > 0:
        raise UsageError(
            f"--norm-gate {policy.norm_gate:g} must be a positive multiple of the median norm",
            code=Code.BAD_NORM_GATE,
            hint="e.g. --norm-gate 3 quarantines updates over 3x the median update norm",
        )
    if policy.max_weight_share is not None:
        check_share_cap(policy.max_weight_share)
    return policy


def resolve_inbox(ws: HubWorkspace, inbox: Path | None) -> Path:
    """The inbox folder, resolved once: an explicit one may be a link (an automounted
    stick), the workspace's own ``HUB/inbox`` may not."""
    if inbox is None:
        if ws.inbox.is_symlink():
            raise WorkspaceError(
                "the hub's inbox is a symbolic link",
                path=ws.inbox,
                code=Code.INBOX_SYMLINK,
                hint="make HUB/inbox a real folder, or pass the stick's folder with --inbox",
            )
        inbox = ws.inbox
    try:
        resolved: Path | None = inbox.resolve(strict=True)
    except (OSError, RuntimeError):
        resolved = None
    if resolved is None or not resolved.is_dir():
        raise UsageError(
            "inbox folder does not exist",
            path=inbox,
            code=Code.NO_INBOX,
            hint="copy the carried bundles (with their .sig files) into it",
        )
    return resolved


def prepare(ws: HubWorkspace, state: HubState, inbox: Path | None, policy: RoundPolicy) -> Prepared:
    """Step 1: the round, its inbox, its package checked against the log, and trust."""
    r = state.round
    if r >= ws.schedule.rounds:
        raise UsageError(
            f"the federation is complete: round {r} is the final package",
            path=ws.current_package(state),
            code=Code.FEDERATION_COMPLETE,
            hint="nothing is left to aggregate; run 'flsilo audit' and deploy the final package",
        )
    folder = resolve_inbox(ws, inbox)
    check_release_officers(ws, state)
    trust = ws.trust(state)
    package_path = ws.current_package(state)
    package = scan_file(package_path, data_digest=False)  # checked by its file digest
    if package.sha256 != state.packages[r]:
        raise VerificationError(
            "the current package no longer matches the event log",
            path=package_path,
            code=Code.PACKAGE_CHANGED,
            hint="restore packages/ from backup, then run 'flsilo audit'",
        )
    prep = Prepared(ws, state, r, folder, policy, trust, package_path, package)
    if prep.fisher and is_two_pass(policy.rule):
        raise UsageError(
            f"this round merges by Fisher, which {strategy_text(policy.rule)} cannot do",
            code=Code.BAD_STRATEGY,
            hint="aggregate a Fisher round with a coordinate-wise strategy (fedavg)",
        )
    return prep


def run_intake(
    prep: Prepared,
    staged: StagedRound | None,
    scratch: Path,
    sync: BackgroundSync | None = None,
) -> Intake:
    """Step 2: verdicts for every inbox entry, the first pass if needed, quarantine.

    With ``staged=None`` nothing is written in the workspace (a dry run); ``scratch`` is
    where a partial round lays out its base (inside the staging folder when aggregating).
    """
    result = intake(
        prep.inbox,
        staged.root if staged is not None else None,
        prep.ws.config,
        prep.state,
        prep.trust,
        prep.package.header,
        prep.package.manifest.model,
        prep.plan,
        sync=sync,
    )
    result.candidates = sorted(result.candidates, key=lambda c: (c.site, c.verified.sha256))
    view = round_view(
        prep.package_path, prep.package.header, prep.package.manifest.model, prep.plan, scratch
    )
    taken = Intake(result, view)
    policy = prep.policy
    # the first pass reads the staged copies: a dry run (nothing staged) stops at the gates
    gated = staged is not None and view.streams and (policy.norm_gate or is_two_pass(policy.rule))
    if len(result.candidates) >= policy.need() and gated:
        taken.gram = gram_of(
            view, _inputs(result.candidates, view), pairwise=is_two_pass(policy.rule)
        )
        if policy.norm_gate:
            result.candidates, taken.gram = _gate(
                result.candidates, taken.gram, policy.norm_gate, result
            )
    if staged is not None:
        for rejection in result.rejections:
            quarantine(rejection, prep.ws.quarantine_dir, prep.round)
    return taken


def _inputs(
    candidates: list[Candidate], view: RoundView, weights: list[float] | None = None
) -> list[StreamInput]:
    return [
        stream_input(c.verified.path, c.verified.header, c.weight if weights is None else w, view)
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
            code=Code.NORM_GATE,
            hint="ask the site whether training diverged or its data changed; "
            "if the update is genuine, raise --norm-gate",
        )
        if c.staged is not None:
            sig_path(c.staged).unlink(missing_ok=True)
        result.rejections.append(
            Rejection(
                c.inbox_path,
                c.site,
                c.verified.sha256,
                error,
                c.staged,
                c.verified.signature_bytes,
            )
        )
    return [candidates[i] for i in keep], gram[np.ix_(keep, keep)]


def _weights(candidates: list[Candidate], cap: float | None) -> tuple[list[float], list[bool]]:
    raw = [c.weight for c in candidates]
    if cap is None:
        return raw, [False] * len(raw)
    return cap_shares(raw, cap)


def build_package(prep: Prepared, taken: Intake, staged: StagedRound, key: PrivateKey) -> Built:
    """Step 3: weights, then the accepted bundles streamed into the next package, signed,
    written into staging with any server state (nothing outside the staging folder changes)."""
    candidates = taken.candidates
    policy, rule, view = prep.policy, prep.policy.rule, taken.view
    if policy.max_weight_share is not None:
        check_share_cap(policy.max_weight_share, len(candidates))
    weights, capped = _weights(candidates, policy.max_weight_share)
    inputs = _inputs(candidates, view, weights)
    coefficients = None
    if view.streams and is_two_pass(rule):
        assert taken.gram is not None
        coefficients = run_two_pass(rule, taken.gram, np.array(weights))  # type: ignore[arg-type]
    provenance = _provenance(view, rule, candidates, weights, taken.result.rejections, prep.fisher)
    assert prep.package.manifest.package is not None
    run, state_in = open_server_run(
        prep.ws.root, policy.server, view, prep.package.manifest.package.provenance
    )
    data_hash = hashlib.sha256()

    def compute(write: Writer) -> list[SiteFigures]:
        return produce(view, inputs, rule, write, coefficients, fisher=prep.fisher, server=run)

    def hashed(write: Writer) -> list[SiteFigures]:
        def both(chunk: memoryview) -> object:
            run_on_chunk([write, data_hash.update], chunk)  # file write+hash, data hash at once
            return None

        return compute(both)

    try:
        provenance = _server_step(prep, staged, run, state_in, compute, provenance)
        manifest = package_manifest(
            prep.ws.config,
            prep.package.manifest.model,
            prep.round + 1,
            prep.state.packages[prep.round],
            provenance,
            release=release_policy(prep.state, prep.ws.config.hub.release_signers),
            log_head=prep.state.log_head,  # the head before this round's commit
            key_chain=tuple(prep.state.rotations),
        )
        staged_path, sha, figures = write_package_stream(
            staged.publish / prep.ws.packages_dir.name,
            manifest,
            prep.package.header.tensors,
            hashed,
            key,
        )
    finally:
        if run is not None:
            run.close()
    return Built(
        staged_path=staged_path,
        final_path=prep.ws.packages_dir / staged_path.name,
        sha256=sha,
        data_sha256=data_hash.hexdigest(),
        manifest=manifest,
        weights=weights,
        capped=capped,
        figures=figures,
        provenance=provenance,
        server=policy.server.text() if run is not None else "none",
    )


def _server_step(
    prep: Prepared,
    staged: StagedRound,
    run: ServerRun | None,
    state_in: str | None,
    compute: Callable[[Writer], object],
    provenance: mf.Provenance,
) -> mf.Provenance:
    """The provenance with the server step (its new state staged), when the round has one."""
    federation = prep.ws.config.federation
    state_out = _server_pass(staged, federation, prep.round, run, compute)
    if run is None or state_out is None:
        return provenance
    step = mf.ServerStep(
        prep.policy.server.name,
        prep.policy.server.params(),
        state_in,
        state_out,
        state_name(federation, prep.round + 1),
    )
    return replace(provenance, server=step)


def _provenance(
    view: RoundView,
    rule: Rule,
    candidates: list[Candidate],
    weights: list[float],
    rejections: list[Rejection],
    fisher: bool,
) -> mf.Provenance:
    strategy_name, strategy_params = strategy_record(view, rule)
    return mf.Provenance(
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
            for x in sorted(rejections, key=lambda x: (x.site, x.sha256, x.error.code))
        ),
        merge="fisher" if fisher else "average",
    )


def commit(
    tx: HubTransaction,
    prep: Prepared,
    taken: Intake,
    built: Built,
    staged: StagedRound,
    key: PrivateKey,
) -> None:
    """Step 4: the round's SHA256SUMS, its events appended to the (signed) log: the commit;
    then the staged files are published."""
    write_sums(staged.archive, {c.verified.path.name: c.verified.sha256 for c in taken.candidates})
    events = _commit_events(prep, taken, built)
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


def _shortfall(prep: Prepared) -> Shortfall:
    policy = prep.policy
    hint = "wait for more bundles (see 'flsilo hub status'), or lower --min-sites"
    if policy.need() > policy.min_sites:
        hint = (
            f"{strategy_text(policy.rule)} is defined for {policy.need()} or more sites; wait "
            "for more bundles or choose another --strategy"
        )
    return Shortfall(policy.need(), hint)


def _report(
    prep: Prepared, taken: Intake, built: Built | None, shortfall: Shortfall | None = None
) -> AggregateReport:
    candidates = taken.candidates
    accepted_sites = {c.site for c in candidates}
    missing = tuple(s for s in prep.state.active_sites() if s not in accepted_sites)
    figures = (
        _figures(candidates, built.weights, built.capped, built.figures)
        if built and built.figures
        else None
    )
    bundles = [c.verified.manifest.bundle for c in candidates]
    package = built.manifest.package if built else None
    policy = prep.policy
    return AggregateReport(
        round=prep.round,
        package=built.final_path if built else None,
        sha256=built.sha256 if built else None,
        strategy=shown_strategy(taken.view, policy.rule),
        rows=tuple(_rows(taken.result, figures)),
        missing_sites=missing,
        global_accuracy=weighted([b.metrics_global for b in bundles if b]),
        trained_accuracy=weighted([b.metrics_trained for b in bundles if b]),
        final=package is not None and package.final,
        dp_budget=dp_budget(prep.ws.config),
        norm_gate=policy.norm_gate if built else None,
        max_weight_share=policy.max_weight_share if built else None,
        server_optimizer=built.server if built else "none",
        merge="fisher" if prep.fisher else "average",
        shortfall=shortfall,
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


def _commit_events(prep: Prepared, taken: Intake, built: Built) -> list[tuple[str, dict[str, Any]]]:
    r, policy = prep.round, prep.policy
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "accept",
            {
                "round": r,
                "site": c.site,
                "sha256": c.verified.sha256,
                "file": c.verified.path.name,
                "samples": c.samples,
                "weight": w,
                "base_round": c.verified.manifest.round,
                **_dp_fields(c),
                **_reported_metrics(c.verified.manifest.bundle),
            }
            | ({"weight_capped": True} if cap else {}),
        )
        for c, w, cap in zip(taken.candidates, built.weights, built.capped, strict=True)
    ]
    events += _reject_events(taken.result.rejections, prep.state, r)
    events.append(
        (
            "aggregate",
            {
                "round": r,
                "package": built.final_path.name,
                "sha256": built.sha256,
                "data_sha256": built.data_sha256,
                "strategy": shown_strategy(taken.view, policy.rule),
                "inputs": len(taken.candidates),
            }
            | ({"norm_gate": policy.norm_gate} if policy.norm_gate is not None else {})
            | (
                {"max_weight_share": policy.max_weight_share}
                if policy.max_weight_share is not None
                else {}
            ),
        )
    )
    events[-1][1].update(_server_fields(built.provenance))
    return events


def shown_strategy(view: RoundView, rule: Rule) -> str:
    """The strategy as reports and the log name it (a closed-form round names its solver)."""
    return strategy_text(rule) if view.streams else strategy_record(view, rule)[0]


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
            f"the final package needs {need} release officer{'s' if need != 1 else ''}, "
            f"but {have} {'is' if have == 1 else 'are'} enrolled",
            code=Code.RELEASE_OFFICERS_MISSING,
            hint=f"enrol them first: flsilo hub enroll {ws.root} OFFICER OFFICER.pub "
            "--fingerprint SHA256:... --role release",
        )
