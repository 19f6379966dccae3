"""What ``aggregate`` would accept and reject from an inbox, without changing anything.

``flsilo aggregate --dry-run`` and ``flsilo hub status --inbox DIR`` print this one report.
Every bundle goes through the same intake gates as a real round (signature, signer, round,
base package, tensors, policy), staged into a temporary folder outside the workspace that is
deleted afterwards; nothing is quarantined, logged, locked or signed, so no passphrase is
needed. Rules that need the whole round's updates (the norm gate, two-pass strategies) are
applied only by the real round.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from flsilo.artifact import scan_file
from flsilo.errors import UsageError, VerificationError
from hub_kit.aggregate import AggregateReport, RoundPolicy, _check_round, _rows, weighted
from hub_kit.intake import intake
from hub_kit.strategies import parse_strategy, strategy_text
from hub_kit.workspace import HubWorkspace


def inbox_report(
    hub_dir: Path,
    inbox: Path | None = None,
    *,
    strategy: str | None = None,
    min_sites: int | None = None,
) -> tuple[AggregateReport, int]:
    """The per-bundle verdicts for the current round and how many accepted bundles it needs."""
    ws = HubWorkspace.open(hub_dir)
    state = ws.state()
    policy = RoundPolicy(
        rule=parse_strategy(strategy or ws.config.hub.strategy),
        min_sites=min_sites if min_sites is not None else ws.config.hub.min_sites,
        norm_gate=None,
        max_weight_share=None,
    )
    folder = inbox or ws.inbox
    _check_round(ws, state, folder, policy)
    package_path = ws.current_package(state)
    package_scan = scan_file(package_path)
    if package_scan.sha256 != state.packages[state.round]:
        raise VerificationError(
            "the current package no longer matches the event log",
            path=package_path,
            code="package-changed",
            hint="restore packages/ from backup, then run 'flsilo audit'",
        )
    with tempfile.TemporaryDirectory(prefix="flsilo-dry-run-") as staging:
        result = intake(
            folder,
            Path(staging) / "staging",
            ws.config,
            state,
            ws.trust(state),
            package_scan.header,
            package_scan.manifest.model,
        )
    if not result.candidates and not result.rejections and not result.skipped:
        raise UsageError(
            "the inbox holds no bundle (*.safetensors)",
            path=folder,
            code="empty-inbox",
            hint="copy the carried bundles and their .sig files into it",
        )
    rows = _rows(result)
    total = sum(r.weight or 0.0 for r in rows if r.verdict.startswith("accepted"))
    rows = [replace(r, share=(r.weight or 0.0) / total) if r.weight and total else r for r in rows]
    accepted = {c.site for c in result.candidates}
    bundles = [c.verified.manifest.bundle for c in result.candidates]
    report = AggregateReport(
        round=state.round,
        package=None,
        sha256=None,
        strategy=strategy_text(policy.rule),
        rows=tuple(rows),
        missing_sites=tuple(s for s in state.active_sites() if s not in accepted),
        global_accuracy=weighted([b.metrics_global for b in bundles if b]),
        trained_accuracy=weighted([b.metrics_trained for b in bundles if b]),
        final=False,
    )
    return report, policy.need()
