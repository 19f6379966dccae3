"""Step 1 of a round: its policy (rule, quorum, gates, share cap, server optimizer), and
everything read once at the start under the lock: the round, its inbox, its package checked
against the log, and trust. Shared by ``aggregate`` and its dry run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flsilo.format import manifest as mf
from flsilo.format.artifact import Scan, scan_file
from flsilo.fs.folders import require_folder
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError, VerificationError, WorkspaceError
from flsilo.signing.trust import AllowedSigners
from hub_kit.server_optimizers import ServerOptimizer, server_optimizer_for
from hub_kit.state import HubState
from hub_kit.strategies import parse_strategy, strategy_text
from hub_kit.strategies.base import Rule, is_two_pass
from hub_kit.weighting import check_share_cap
from hub_kit.workspace import HubWorkspace


@dataclass(frozen=True)
class RoundOverrides:
    """What the operator asked of this one round (``aggregate`` and its dry run, ``hub status
    --inbox``); ``None`` everywhere means the federation's own setting."""

    inbox: Path | None = None
    """The folder holding the carried bundles (default ``HUB/inbox``)."""
    strategy: str | None = None
    min_sites: int | None = None
    norm_gate: float | None = None
    max_weight_share: float | None = None
    cosine_gate: float | None = None
    server_optimizer: str | None = None
    """Another server optimizer for this round only; it takes its own defaults unless the
    settings below are given (:func:`hub_kit.server_optimizers.server_optimizer_for`)."""
    server_lr: float | None = None
    server_momentum: float | None = None
    server_betas: tuple[float, ...] | None = None
    server_tau: float | None = None


@dataclass(frozen=True)
class RoundPolicy:
    """How this round is aggregated: the rule, the quorum, the gates and the share cap."""

    rule: Rule
    min_sites: int
    norm_gate: float | None
    max_weight_share: float | None
    server: ServerOptimizer = field(default_factory=ServerOptimizer)
    cosine_gate: float | None = None
    """Quarantine a weight update whose cosine to the median update is below this."""

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


def round_policy(ws: HubWorkspace, overrides: RoundOverrides) -> RoundPolicy:
    """The federation's defaults with this round's overrides, checked."""
    hub, o = ws.config.hub, overrides
    policy = RoundPolicy(
        rule=parse_strategy(o.strategy or hub.strategy),
        min_sites=o.min_sites if o.min_sites is not None else hub.min_sites,
        norm_gate=o.norm_gate if o.norm_gate is not None else hub.norm_gate,
        max_weight_share=o.max_weight_share
        if o.max_weight_share is not None
        else hub.max_weight_share,
        server=server_optimizer_for(
            hub, o.server_optimizer, o.server_lr, o.server_momentum, o.server_betas, o.server_tau
        ),
        cosine_gate=o.cosine_gate if o.cosine_gate is not None else hub.cosine_gate,
    )
    if policy.norm_gate is not None and not policy.norm_gate > 0:
        raise UsageError(
            f"--norm-gate {policy.norm_gate:g} must be a positive multiple of the median norm",
            code=Code.BAD_NORM_GATE,
            hint="e.g. --norm-gate 3 quarantines updates over 3x the median update norm",
        )
    if policy.cosine_gate is not None and not -1 < policy.cosine_gate < 1:
        raise UsageError(
            f"--cosine-gate {policy.cosine_gate:g} must be a cosine between -1 and 1",
            code=Code.BAD_COSINE_GATE,
            hint="e.g. --cosine-gate 0 quarantines updates that point away from the round's "
            "median update",
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
    require_folder(
        inbox, "the inbox", hint="give the folder the bundles and their .sig files were copied to"
    )
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
