"""What ``aggregate`` would accept and reject from an inbox, without changing anything.

``flsilo aggregate --dry-run`` and ``flsilo hub status --inbox DIR`` print this one report.
Every bundle goes through the same intake gates as a real round (signature, signer, round,
base package, tensors, policy), staged into a temporary folder outside the workspace that is
deleted afterwards; nothing is quarantined, logged, locked or signed, so no passphrase is
needed. Rules that need the whole round's updates (the norm gate, two-pass strategies) are
applied only by the real round.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from flsilo.codes import Code
from flsilo.errors import UsageError
from hub_kit.aggregate import preview
from hub_kit.report import AggregateReport
from hub_kit.roundprep import round_policy
from hub_kit.workspace import HubWorkspace


def inbox_report(
    hub_dir: Path,
    inbox: Path | None = None,
    *,
    strategy: str | None = None,
    min_sites: int | None = None,
) -> tuple[AggregateReport, int]:
    """The per-bundle verdicts for the current round and how many accepted bundles it needs.

    The verdicts are :func:`hub_kit.aggregate.preview`'s: the real intake gates, run with no
    staging folder at all, so nothing is written anywhere.
    """
    ws = HubWorkspace.open(hub_dir)
    need = round_policy(ws, strategy, min_sites, None, None).need()
    report = preview(hub_dir, inbox=inbox, strategy=strategy, min_sites=min_sites)
    if not report.rows:
        raise UsageError(
            "the inbox holds no bundle (*.safetensors)",
            path=inbox or ws.inbox,
            code=Code.EMPTY_INBOX,
            hint="copy the carried bundles and their .sig files into it",
        )
    rows = report.rows
    total = sum(r.weight or 0.0 for r in rows if r.accepted)
    shared = tuple(
        replace(r, share=(r.weight or 0.0) / total) if r.weight and total else r for r in rows
    )
    return replace(report, rows=shared), need
