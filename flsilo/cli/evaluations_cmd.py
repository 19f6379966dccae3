"""``flsilo hub evaluations``: the sites' signed evaluation reports, one row per package."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from flsilo.cli.common import emit_json, info, passphrase_source, set_json, stdout
from flsilo.runtime.errors import ExitCode, UsageError
from flsilo.signing import evalreport as er
from flsilo.signing.claims import PERCENT, metric_name, show_figure

if TYPE_CHECKING:
    from hub_kit.evaluations import Cell, Refused


def evaluations(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    inbox: Annotated[
        Path | None,
        typer.Option(
            help="Also show the reports in this folder (a stick), not yet archived "
            "(without it: those in HUB_DIR/inbox)."
        ),
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="Also plot each site's figure per package (PNG).")
    ] = None,
    archive: Annotated[
        bool,
        typer.Option(
            "--archive",
            help="After the last round: archive and log the --inbox reports (those on the "
            "final package count towards --require-evaluations).",
        ),
    ] = False,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="With --archive: the hub key's passphrase file.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """How every package performed at every site, from the sites' signed reports only.

    Rows are packages, columns sites; a cell is the figure the site's report leads with,
    by its key (the task's primary metric: classify accuracy, detect mAP@0.5; a plug-in's,
    the one its reports name), with its 95% interval where one is computed for it.
    Reports that do not verify are listed under the table with the reason, and the command
    exits 3. Under the table: whether the final package is final
    (with --require-evaluations M at hub init: once M sites' reports on it verify).
    Example: flsilo hub evaluations hub --inbox /media/usb
    After the last round: flsilo hub evaluations hub --inbox /media/usb --archive
    """
    set_json(json_out)
    from hub_kit.evaluations import archived_folders, collect, report_files, table, table_metric
    from hub_kit.finality import archive_final_reports, finality
    from hub_kit.workspace import HubWorkspace

    ws = HubWorkspace.open(hub_dir)
    taken: list[str] = []
    not_taken: list[Refused] = []  # refused by --archive itself (revoked, a name taken)
    if archive:
        if inbox is None:
            raise UsageError(
                "--archive needs --inbox DIR, the folder holding the carried reports",
                hint="flsilo hub evaluations HUB --inbox /media/usb --archive",
            )
        kept, not_taken = archive_final_reports(ws, inbox, passphrase_source(passphrase_file))
        taken = [v.path.name for v in kept]
    state = ws.state()  # the hub's signature over the log is checked first
    events = ws.log.read()
    archived = collect(ws, state, archived_folders(ws), events)
    archived_shas = {v.sha256 for v in archived.reports}
    pending = None
    if inbox is not None:  # a stick's reports are judged as now
        pending = collect(ws, state, [inbox])
    elif not archive and report_files(ws.inbox):
        # copied in from a stick, they wait in the hub's inbox for the next aggregate, which
        # archives them and leaves the inbox as it is: a copy the log records is judged as
        # the archived one (a later revocation does not refuse it), and not shown twice
        inbox = ws.inbox
        pending = collect(ws, state, [inbox], events)
    if pending is not None:
        pending.reports = [v for v in pending.reports if v.sha256 not in archived_shas]
    reports = archived.reports + (pending.reports if pending else [])
    refused = archived.refused + (pending.refused if pending else [])
    refused += [r for r in not_taken if r.path not in {x.path for x in refused}]
    standing = finality(ws, state, events, archived.reports, pending.reports if pending else None)
    rows = table(reports, archived_shas)
    sites = sorted({v.site for v in reports})
    metric = table_metric(rows)  # the reports' own primary figure, by its key
    if png is not None:
        _plot(rows, sites, png, metric)
    ok = not refused
    if json_out:
        emit_json(
            "hub evaluations",
            ok,
            {
                "hub": str(hub_dir),
                "reports": [
                    {
                        "file": str(v.path),
                        "sha256": v.sha256,
                        "archived": v.sha256 in archived_shas,
                        **{k: v.report[k] for k in ("site", "round", "package", "package_sha256")},
                        "samples": v.report["samples"],
                        "metric": er.primary_figure(v.report),
                        "metrics": v.report["metrics"],
                    }
                    for v in reports
                ],
                "refused": [r.__dict__ | {"path": str(r.path)} for r in refused],
                "archived_now": taken,
                "finality": standing.to_dict(),
            },
        )
    else:
        shown_inbox = inbox if pending is not None and not archive else None
        _render(rows, sites, refused, shown_inbox, metric, standing.package)
        for name in taken:
            info(f"archived and logged {name}")
        info(standing.text())
        if png is not None:
            info(f"plot written to {png}")
    if not ok:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))


def _cell(cell: Cell | None, metric: str | None = "accuracy") -> str:
    """``93.0% (89-96)`` for a percentage figure, ``0.941 (0.91-0.97)`` for another; the
    figure's name first where the table's title does not name it (``metric`` None)."""
    if cell is None or cell.value is None or cell.metric is None:
        return "-"
    text = show_figure(cell.metric, cell.value)
    if metric is None:
        text = f"{metric_name(cell.metric)} {text}"
    if cell.low is not None and cell.high is not None:
        if cell.metric in PERCENT:
            text += f" ({100 * cell.low:.0f}-{100 * cell.high:.0f})"
        else:
            text += f" ({cell.low:.2f}-{cell.high:.2f})"
    return text + ("" if cell.archived else " *")


def _render(
    rows: dict[int, dict[str, Cell]],
    sites: list[str],
    refused: list[Refused],
    inbox: Path | None,
    metric: str | None = "accuracy",
    final_package: str | None = None,
) -> None:
    out = stdout()
    if not rows:
        info("no verified evaluation report yet (sites write them with 'flsilo evaluate --report')")
    else:
        # the reports' primary figure (classify: accuracy; multilabel: mean AUROC; a
        # plug-in's: the one its reports name), by name; each cell's where they differ
        intervals = any(c.low is not None for row in rows.values() for c in row.values())
        shown = metric_name(metric) if metric is not None else "primary figure"
        title = f"{shown} per package and site" + " (95% interval)" * intervals
        table = Table(title=title, title_justify="left")
        table.add_column("package", justify="right", no_wrap=True)
        for site in sites:
            table.add_column(site, justify="right")
        for round_ in sorted(rows):
            table.add_row(f"r{round_:04d}", *(_cell(rows[round_].get(s), metric) for s in sites))
        out.print(table)
        if inbox is not None:
            # no round follows the final package: only --archive takes reports in then
            taker = (
                f"the same command with --inbox {shlex.quote(str(inbox))} --archive"
                if final_package
                else "the next aggregate"
            )
            info(f"* in {inbox}, not yet archived: {taker} archives and logs it")
    for r in refused:
        info(f"refused {r.path.name}: error[{r.code}]: {r.reason} (hint: {r.hint})")


def _series(
    rows: dict[int, dict[str, Cell]], sites: list[str], metric: str | None
) -> dict[str, list[tuple[int, float]]]:
    """The plotted lines: one per site (percentages in %) where every cell shows ``metric``;
    where the reports lead with several figures (``metric`` None), one per site and figure,
    labelled with both, so that no line joins one figure to another."""
    scale = 100 if metric in PERCENT else 1
    lines: dict[str, list[tuple[int, float]]] = {}
    for site in sites:
        for r in sorted(rows):
            c = rows[r].get(site)
            if c is None or c.value is None or c.metric is None:
                continue
            label = site if metric is not None else f"{site}: {metric_name(c.metric)}"
            lines.setdefault(label, []).append((r, scale * c.value))
    return lines


def _plot(
    rows: dict[int, dict[str, Cell]], sites: list[str], png: Path, metric: str | None
) -> None:
    from flsilo.cli.history_cmd import pyplot

    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    from flsilo.fs.atomic import atomic_writer

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in _series(rows, sites, metric).items():
        ax.plot(*zip(*points, strict=True), marker="o", linewidth=1, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("package round")
    unit = " (%)" if metric in PERCENT else ""
    shown = (
        metric_name(metric) if metric is not None else "primary figure (as each report names it)"
    )
    ax.set_ylabel(f"{shown} on the site's held-out data{unit}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    with atomic_writer(png) as fh:
        fig.savefig(fh, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
