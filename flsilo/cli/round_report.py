"""The round report for people: ``aggregate``, ``aggregate --dry-run`` and ``hub status
--inbox`` print this one table (the same columns in each), one row per inbox file at 80
columns; codes, reasons and hints follow it, one line each."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from hub_kit.report import AggregateReport


def pct(v: float | None) -> str:
    return f"{100 * v:.1f}%" if v is not None else "-"


def _short_file(name: str) -> str:
    """fed-r0003-site-a.safetensors -> r0003-site-a: what a person needs, in 12 columns."""
    found = re.search(r"-(r\d{4}-.+)\.safetensors$", name)
    return found.group(1) if found else name


def _cosine_cell(cosine: float | None, gate: float | None) -> str:
    """``+0.97``; in red when below the round's cosine gate."""
    if cosine is None:
        return "-"
    text = f"{cosine:+.2f}"
    return f"[red]{text}[/]" if gate is not None and cosine < gate else text


def _verdict_cell(r: Any) -> str:
    """One word or two, so that every file keeps one row at 80 columns; the code, the reason
    and the hint follow the table."""
    if r.accepted and r.late:
        return f"late by {r.late}"
    return {"accepted": "[green]accepted[/]", "rejected": "[red]rejected[/]"}.get(
        r.verdict_text, r.verdict_text
    )


def _aggregate_cells(r: Any, norms: bool, round_: int) -> list[str]:
    def num(v: float | None) -> str:
        return f"{v:.4g}" if v is not None else "-"

    short = _short_file(r.file)  # named as expected: the site says it all
    cells = [
        r.site if short == f"r{round_:04d}-{r.site}" else f"{r.site}\n{short}",
        _verdict_cell(r),
        str(r.samples or "-"),
        pct(r.share) + ("*" if r.capped else ""),
    ]
    cells += [num(r.update_norm), num(r.distance)] if norms else []
    accuracy = "-"
    if r.global_accuracy is not None or r.trained_accuracy is not None:
        accuracy = f"{pct(r.global_accuracy)} → {pct(r.trained_accuracy)}"
    return [*cells, accuracy]


def _render_evaluations(report: AggregateReport, err: Console) -> None:
    """The sites' evaluation reports archived with the round, and those refused."""
    if report.evaluations:
        err.print(
            f"evaluation reports archived with the round: {', '.join(report.evaluations)} "
            "(flsilo hub evaluations)"
        )
    for line in report.refused_evaluations:  # left in the inbox; nothing was archived
        err.print(f"evaluation report refused: {escape(line)}", soft_wrap=False)


def _weight_notes(report: AggregateReport, err: Console) -> None:
    """Under the table: a site holding most of the weight with no cap, or who was capped."""
    if report.weight_warning:
        err.print(f"warning: {escape(report.weight_warning)}")
    if any(r.capped for r in report.rows) and report.max_weight_share is not None:
        err.print(f"* share capped at {100 * report.max_weight_share:g}% of the round's weight")


def render_aggregate(report: object) -> None:
    from hub_kit.report import AggregateReport

    assert isinstance(report, AggregateReport)
    from hub_kit.privacy import spent_text

    title = f"round {report.round} — strategy {report.strategy}"
    if report.server_optimizer != "none":
        title += f", server {report.server_optimizer}"
    if report.merge == "fisher":
        title += ", Fisher merge"
    if report.norm_gate is not None:
        title += f", norm gate {report.norm_gate:g}x median"
    if report.cosine_gate is not None:
        title += f", cosine gate {report.cosine_gate:g}"
    if report.max_weight_share is not None:
        title += f", share cap {100 * report.max_weight_share:g}%"
    # No outer box, and the bundle's name only where it is not rNNNN-SITE of this round
    # (shown so, never folded; the full name is in --json): 80 columns hold every column.
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    dp = report.dp_budget is not None
    norms = any(r.update_norm is not None or r.distance is not None for r in report.rows)
    columns = ["site", "verdict", "samples", "share"]
    columns += ["norm", "dist."] if norms else []  # only rules and gates that measure them
    cosines = any(r.cosine is not None for r in report.rows)  # weight rounds: to the median
    columns += ["cos."] if cosines else []
    columns += ["val. acc."]  # site-reported, before → after local training
    for col in columns:
        table.add_column(
            col,
            overflow="fold",
            no_wrap=col in ("site", "val. acc."),
            min_width=8 if col == "verdict" else None,
        )

    for r in report.rows:
        cells = _aggregate_cells(r, norms, report.round)
        if cosines:
            cells.insert(-1, _cosine_cell(r.cosine, report.cosine_gate))
        table.add_row(*cells)
    from flsilo.cli.common import stderr

    err = stderr()
    err.print(table)
    if dp:  # under the table, not a ninth column: 80 columns already hold eight
        spent = (
            f"{r.site} {spent_text(r.dp_epsilon_total, report.dp_budget)}" for r in report.rows
        )
        err.print(f"epsilon spent (of each site's budget): {', '.join(spent)}")
    _weight_notes(report, err)
    for r in report.rows:
        if r.code:
            err.print(
                f"{r.site} ({_short_file(r.file)}): {escape(r.reason or '')} ({r.code})",
                soft_wrap=False,
            )
            err.print(f"  hint: {escape(r.hint or '')}")
        elif r.reason:  # skipped: why
            err.print(f"{_short_file(r.file)}: {r.verdict_text}: {escape(r.reason)}")
    _render_evaluations(report, err)
    if report.package:
        err.print(
            f"sample-weighted site validation accuracy: previous global model {pct(report.global_accuracy)}, "
            f"site models {pct(report.trained_accuracy)}"
        )
        err.print(
            "next package (final — the federation is complete):"
            if report.final
            else "next package — carry it and its .sig to every site:"
        )
