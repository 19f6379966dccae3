"""What ``aggregate`` would accept and reject from an inbox, without changing anything.

``flsilo aggregate --dry-run`` and ``flsilo hub status --inbox DIR`` print this one report.
Every bundle goes through the same intake gates as a real round (signature, signer, round,
base package, tensors, policy), staged into a temporary folder outside the workspace that is
deleted afterwards; nothing is quarantined, logged, locked or signed, so no passphrase is
needed. Rules that need the whole round's updates (the norm gate, two-pass strategies) are
applied only by the real round.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from hub_kit.aggregate import preview
from hub_kit.hubeval import TestSetEvaluator
from hub_kit.report import AggregateReport
from hub_kit.roundprep import RoundOverrides, round_policy
from hub_kit.workspace import HubWorkspace


@dataclass(frozen=True)
class InboxCheck:
    """The dry run's report, how many accepted bundles the round needs, and the exit status
    a script reads: 0 the round would aggregate with nothing rejected, 3 something would be
    rejected or not read (a file whose extension a copy changed), 1 too few would be
    accepted."""

    report: AggregateReport
    needed: int

    @property
    def status(self) -> int:
        if self.report.rejected or self.report.misnamed:
            return 3
        return 1 if self.report.accepted < self.needed else 0


def inbox_report(
    hub_dir: Path,
    overrides: RoundOverrides = RoundOverrides(),
    evaluator: TestSetEvaluator | None = None,
) -> InboxCheck:
    """The per-bundle verdicts for the current round and how many accepted bundles it needs.

    The verdicts are :func:`hub_kit.aggregate.preview`'s: the real intake gates, run with no
    staging folder at all, so nothing is written anywhere.
    """
    ws = HubWorkspace.open(hub_dir)
    need = round_policy(ws, overrides).need()
    report = preview(hub_dir, overrides, evaluator)
    if not report.rows:
        raise UsageError(
            "the inbox holds no bundle (*.safetensors)",
            path=overrides.inbox or ws.inbox,
            code=Code.EMPTY_INBOX,
            hint=report.misnamed[0]  # a bundle a copy renamed: the name to give it
            if report.misnamed
            else "copy the carried bundles and their .sig files into it",
        )
    rows = report.rows
    total = sum(r.weight or 0.0 for r in rows if r.accepted)
    shared = tuple(
        replace(r, share=(r.weight or 0.0) / total) if r.weight and total else r for r in rows
    )
    return InboxCheck(replace(report, rows=shared), need)
