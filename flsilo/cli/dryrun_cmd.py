"""The one inbox report behind ``aggregate --dry-run`` and ``hub status --inbox DIR``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flsilo.cli.common import emit_json, info

if TYPE_CHECKING:
    from hub_kit.hubeval import TestSetEvaluator
    from hub_kit.roundprep import RoundOverrides


def show_inbox_report(
    hub_dir: Path,
    overrides: RoundOverrides,
    *,
    json_out: bool,
    command: str,
    evaluator: TestSetEvaluator | None = None,
) -> None:
    """Print what a round would accept and reject; exit with the check's status (0 all
    good, 3 a reject, 1 too few)."""
    from hub_kit.dryrun import inbox_report

    check = inbox_report(hub_dir, overrides, evaluator)
    report, need, status = check.report, check.needed, check.status
    accepted, rejected = report.accepted, report.rejected
    if json_out:
        emit_json(
            command,
            status == 0,
            {
                "dry_run": True,
                "report": report.to_dict(),
                "accepted": accepted,
                "rejected": rejected,
                "needed": need,
            },
        )
    else:
        from flsilo.cli.round_report import render_aggregate

        render_aggregate(report)
        folder = overrides.inbox or hub_dir / "inbox"
        verdict = (
            f"would aggregate round {report.round}"
            if accepted >= need
            else f"would NOT aggregate round {report.round}: needs {need}"
        )
        info(
            f"dry run, nothing changed: {accepted} would be accepted, {rejected} rejected; "
            f"{verdict}"
        )
        if report.missing_sites:
            info(f"no accepted bundle yet from: {', '.join(report.missing_sites)}")
        if status == 0:
            info(
                f"aggregate with: flsilo aggregate {shlex.quote(str(hub_dir))} "
                f"--inbox {shlex.quote(str(folder))}"
            )
    if status:
        raise typer.Exit(status)
