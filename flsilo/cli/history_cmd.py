"""``flsilo hub history``: a per-round table (and optional PNG) from the event log alone."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from flsilo.cli.common import emit_json, info, set_json, stdout
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.signing.claims import PERCENT, metric_name, show_figure

if TYPE_CHECKING:
    from hub_kit.history import RoundHistory


def _short(package: str | None) -> str:
    return f"→ {package.removesuffix('.safetensors')}" if package else "not aggregated"


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None else "-"


def _figure(value: float | None, metric: str) -> str:
    return show_figure(metric, value)


def history(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    png: Annotated[
        Path | None,
        typer.Option(
            help="Also draw the task's primary metric per round into this PNG (plot extra)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Per round: each site accepted or rejected, its samples, weight share and reported accuracy.

    Read from the hash-chained event log alone (checked on the way); changes nothing.
    Example: flsilo hub history hub --png history.png
    """
    set_json(json_out)
    from hub_kit.history import history as fold
    from hub_kit.history import to_jsonable, warnings
    from hub_kit.workspace import HubWorkspace

    ws = HubWorkspace.open(hub_dir)
    ws.state()  # the hub's signature over the log is checked before anything is shown
    from flsilo.tasks import primary_metric

    metric = primary_metric(ws.config.plan.task)
    rounds = fold(ws.log.read(), metric)
    # chance (1 in K) is a single-label idea: other tasks are not checked against it
    num_classes = len(ws.config.classes) if metric == "accuracy" else 0
    notes = warnings(rounds, num_classes, metric)
    if png is not None:
        _plot(rounds, png, notes, metric)
    if json_out:
        emit_json(
            "hub history",
            True,
            {
                "hub": str(hub_dir),
                "metric": metric,
                "rounds": to_jsonable(rounds, num_classes),
                "warnings": notes,
            },
        )
        return
    if not rounds:
        info("no round has been aggregated yet")
        return
    table = Table(title=f"{hub_dir}: what sites sent and reported, per round", title_justify="left")
    for name, justify in (
        ("round", "right"),
        ("site", "left"),
        ("verdict", "left"),
        ("samples", "right"),
        ("weight", "right"),
        (f"val {metric_name(metric)}", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "verdict")  # type: ignore[arg-type]
    for r in rounds:
        for i, s in enumerate(r.sites):
            table.add_row(
                str(r.round) if i == 0 else "",
                s.site,
                s.verdict_text,
                str(s.samples) if s.samples is not None else "-",
                _pct(s.share),
                f"{_figure(s.primary_before, metric)} → {_figure(s.primary_after, metric)}"
                if s.primary_after is not None
                else "-",
            )
        claim = r.hub_claim
        table.add_row(
            "", "[bold]round[/]", _short(r.package), "", "",
            _figure(r.primary_after, metric), end_section=claim is None,
        )  # fmt: skip
        if claim is not None:  # the hub's own figure for the new package, named as its claim
            table.add_row(
                "", "[bold]hub claim[/]", f"hub test set, {claim['test_set_records']} records",
                "", "", _figure(claim["figures"].get(metric), metric), end_section=True,
            )  # fmt: skip
    stdout().print(table)
    for note in notes:
        info(f"warning: {note}")
    if png is not None:
        info(f"plot written to {png}")


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or the usage error naming the extra
    (every ``--png`` of the command line draws through this)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError(
            "--png needs matplotlib",
            code=Code.PLOT_EXTRA,
            hint="install the plot extra: pip install 'flsilo[plot]'",
        ) from exc
    return plt


def _plot(rounds: list[RoundHistory], png: Path, notes: list[str], metric: str) -> None:
    from flsilo.fs.atomic import atomic_writer

    fig = draw_history(rounds, notes, metric)
    with atomic_writer(png) as fh:
        fig.savefig(fh, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)


def draw_history(rounds: list[RoundHistory], notes: list[str], metric: str) -> Any:
    """The ``--png`` figure: each site's reported metric per round, the weighted mean and the
    hub's claims, on whole-round ticks, with the table's warnings (a validation split too
    small to mean much) written under it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    scale = 100 if metric in PERCENT else 1
    sites = sorted({s.site for r in rounds for s in r.sites})
    for site in sites:
        points = [
            (r.round, scale * s.primary_after)
            for r in rounds
            for s in r.sites
            if s.site == site and s.primary_after is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", linewidth=1, label=site)
    mean = [(r.round, scale * r.primary_after) for r in rounds if r.primary_after is not None]
    if mean:
        ax.plot(*zip(*mean, strict=True), color="black", linewidth=2, label="weighted mean")
    claims = [
        (r.round, scale * value)
        for r in rounds
        if r.hub_claim and (value := r.hub_claim["figures"].get(metric)) is not None
    ]
    if claims:  # the hub's own figure for each new package (aggregate --eval), named as such
        ax.plot(*zip(*claims, strict=True), "k--", marker="s", label="hub claim (hub test set)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # rounds are whole
    if rounds:  # at least one whole round wide: a narrower axis gets fractional ticks
        ax.set_xlim(rounds[0].round - 0.5, rounds[-1].round + 0.5)
    ax.set_xlabel("round")
    unit = " (%)" if metric in PERCENT else ""
    ax.set_ylabel(f"validation {metric_name(metric)} reported by sites{unit}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    if notes:  # the same warnings as the table's, under the plot
        fig.text(0.01, -0.02, "\n".join(textwrap.wrap("; ".join(notes), 110)), fontsize=7, va="top")
    return fig
