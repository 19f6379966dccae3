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

from flsilo.signing.claims import lead_figure, metric_name, show_figure, show_metric

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


def _aggregate_cells(r: Any, figures: bool, gate: float | None, metric: str) -> list[str]:
    def num(v: float | None) -> str:
        return f"{v:.4g}" if v is not None else "-"

    cells = [
        escape(r.site),  # a file not named rNNNN-SITE is named under the table
        _verdict_cell(r),
        str(r.samples or "-"),
        pct(r.share) + ("*" if r.capped else ""),
    ]
    if figures:  # weight rounds: the update's norm, distance and cosine to the median
        cells += [num(r.update_norm), num(r.distance), _cosine_cell(r.cosine, gate)]
    before, after = r.global_primary, r.trained_primary  # the task's primary metric
    shown = "-"
    if before is not None or after is not None:
        shown = f"{show_figure(metric, before)} → {show_figure(metric, after)}"
    return [*cells, shown]


def _metric_column(metric: str) -> str:
    """The site-reported column: ``val. acc.`` for classify, else ``val. mean AUROC`` ..."""
    return "val. acc." if metric == "accuracy" else f"val. {metric_name(metric)}"


def _render_evaluations(report: AggregateReport, err: Console) -> None:
    """The sites' evaluation reports archived with the round, and those refused; then any
    site whose inputs look unlike the others' (drift)."""
    for row in report.rows:
        drift = row.input_drift or {}
        if drift.get("flagged"):
            err.print(f"input drift: {escape(str(drift.get('hint')))}", soft_wrap=False)
    if report.evaluations:
        err.print(
            f"evaluation reports archived with the round: {', '.join(report.evaluations)} "
            "(flsilo hub evaluations)"
        )
    for line in report.refused_evaluations:  # left in the inbox; nothing was archived
        err.print(f"evaluation report refused: {escape(line)}", soft_wrap=False)
    for line in report.misnamed:  # a bundle a copy renamed shows nowhere else
        err.print(f"warning: {escape(line)}", soft_wrap=False)


def _weight_notes(report: AggregateReport, err: Console) -> None:
    """Under the table: a site holding most of the weight with no cap, or who was capped."""
    if report.weight_warning:
        err.print(f"warning: {escape(report.weight_warning)}")
    for note in report.learning_warnings:  # from the log's history (hub history says more)
        err.print(f"warning: {escape(note)}")
    if any(r.capped for r in report.rows) and report.max_weight_share is not None:
        err.print(f"* share capped at {100 * report.max_weight_share:g}% of the round's weight")


def _title(report: Any) -> str:
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
    return title


def hub_claim_line(claim: Any) -> str:
    """The hub's claim in one line: its figures and the test set it names."""
    f = claim.figures
    name, value = lead_figure(
        {"task": claim.task, "figures": f, "primary_metric": claim.primary_metric}
    )
    bal = f", balanced accuracy {pct(f['balanced_accuracy'])}" if "balanced_accuracy" in f else ""
    return (
        f"hub claim, on the hub's test set ({claim.test_set_records} records, index "
        f"{claim.test_set_sha256[:12]}…): {show_metric(name, value)}{bal}, loss "
        + (f"{f['loss']:.4f}" if f.get("loss") is not None else "-")
    )


def _table(report: Any) -> Table:
    """One row per inbox file, the same columns for the dry run and the real round (a
    statistics round has no update figures); 80 columns hold them all."""
    table = Table(title=_title(report), box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    columns = ["site", "verdict", "samples", "share"]
    columns += ["norm", "dist.", "cos."] if report.weight_round else []
    shown = _metric_column(report.metric)
    columns += [shown]  # site-reported, before → after local training
    for col in columns:
        table.add_column(
            col,
            overflow="fold",
            no_wrap=col in ("site", shown),
            min_width=8 if col == "verdict" else None,
        )
    for r in report.rows:
        table.add_row(*_aggregate_cells(r, report.weight_round, report.cosine_gate, report.metric))
    return table


def _notes(report: Any) -> list[str]:
    """What follows the table, one line per file that needs one: codes, reasons and hints;
    why an entry was skipped; the name of a file not named rNNNN-SITE."""
    lines = []
    for r in report.rows:
        expected = _short_file(r.file) == f"r{report.round:04d}-{r.site}"
        site, short = escape(r.site), escape(_short_file(r.file))  # from the stick: no markup
        if r.code:
            lines.append(f"{site} ({short}): {escape(r.reason or '')} ({r.code})")
            lines.append(f"  hint: {escape(r.hint or '')}")
        elif r.reason:  # skipped: why
            lines.append(f"{short}: {r.verdict_text}: {escape(r.reason)}")
        elif not expected:
            lines.append(f"{site} ({short}): {r.verdict_text}")
    return lines


def _next_package_line(report: AggregateReport) -> str:
    if not report.final:
        return "next package — carry it and its .sig to every site:"
    m = report.require_evaluations
    if not m:
        return "next package (final — the federation is complete):"
    need = "1 site's" if m == 1 else f"{m} sites'"
    return (
        f"last package — NOT final until {need} evaluation reports on it verify: carry it"
        " to the sites, then take their reports in with 'flsilo hub evaluations HUB"
        " --inbox DIR --archive':"
    )


def render_aggregate(report: object) -> None:
    from flsilo.cli.common import stderr
    from hub_kit.privacy import spent_text
    from hub_kit.report import AggregateReport

    assert isinstance(report, AggregateReport)
    err = stderr()
    err.print(_table(report))
    if report.dp_budget is not None:  # under the table, not another column
        spent = (
            f"{r.site} {spent_text(r.dp_epsilon_total, report.dp_budget)}" for r in report.rows
        )
        err.print(f"epsilon spent (of each site's budget): {', '.join(spent)}")
    _weight_notes(report, err)
    for line in _notes(report):
        err.print(line)
    _render_evaluations(report, err)
    if report.hub_evaluation is not None:
        err.print(hub_claim_line(report.hub_evaluation))
    if report.package:
        metric = report.metric
        if report.weight_round:  # a statistics round validates nothing
            err.print(
                f"sample-weighted site validation {metric_name(metric)}: previous global model "
                f"{show_figure(metric, report.global_primary)}, "
                f"site models {show_figure(metric, report.trained_primary)}"
            )
        err.print(_next_package_line(report))
