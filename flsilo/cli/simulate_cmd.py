"""``flsilo simulate``: try schedules, partitions and strategies on one machine before any trip."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from flsilo.cli.common import emit_json, info, set_json, stdout
from flsilo.cli.options import int_list, name_list, with_settings
from flsilo.format.manifest import to_jsonable
from flsilo.fs.folders import require_folder
from flsilo.plans.federation import HubPolicy
from flsilo.plans.plan import Plan
from flsilo.runtime.errors import UsageError
from flsilo.signing.claims import metric_name, show_figure

if TYPE_CHECKING:
    from sim_kit.simulate import SweepReport


def _positive(text: str, what: str) -> list[int]:
    values = list(int_list(text, what))
    if not values or min(values) < 1:
        raise UsageError(f"{what} needs positive values", hint=f"e.g. {what} 1,5,10")
    return values


def spark(values: list[float]) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    return "".join(bars[min(8, max(0, round(v * 8)))] for v in values)


@with_settings(simulate=True)
def simulate(
    plan_settings: dict[str, Any],
    hub: HubPolicy,
    sites: Annotated[int, typer.Option(min=1, help="Number of simulated sites.")] = 2,
    partition: Annotated[str, typer.Option(help="iid, dirichlet:ALPHA or shards:K.")] = "iid",
    shift: Annotated[
        str, typer.Option(help="Per-site preprocessing, cycled: none,invert,dim,blur.")
    ] = "none",
    schedule: Annotated[
        str, typer.Option(help="one-shot, few-shot:R or periodic:R.")
    ] = "periodic:10",
    local_epochs: Annotated[str, typer.Option(help="E, or several to sweep: 1,5,10,20.")] = "1",
    batch_size: Annotated[str, typer.Option(help="B, or several to sweep: 10,50.")] = "32",
    total_epochs: Annotated[
        int | None,
        typer.Option(help="Keep R*E fixed: rounds = total / E (overrides the schedule's R)."),
    ] = None,
    model: Annotated[str, typer.Option(help="Model spec.")] = "cnn:channels=16x32,hidden=128",
    target: Annotated[
        float | None,
        typer.Option(help="Accuracy to reach: 0.9 absolute, or -0.95 for 95% of centralized."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="imagefolder, images-csv, csv or npz data (default: the bundled handwritten digits)."
        ),
    ] = None,
    data_format: Annotated[
        str | None,
        typer.Option(
            help="imagefolder, images-csv, csv, npz, dicom, video, yolo or coco (default: guessed)."
        ),
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="Class names in index order (needed for --data).")
    ] = None,
    input_shape: Annotated[
        str | None, typer.Option(help="C,H,W or feature count (needed for --data).")
    ] = None,
    one_shot: Annotated[
        bool,
        typer.Option(
            "--one-shot", help="Also report one-shot averaging over the same total epochs."
        ),
    ] = False,
    pretrain_fraction: Annotated[
        float,
        typer.Option(
            help="Hold out this share of data (no site has it) to pretrain the start model."
        ),
    ] = 0.0,
    pretrain_epochs: Annotated[
        int, typer.Option(min=1, help="Epochs of pretraining on that share.")
    ] = 5,
    no_baselines: Annotated[
        bool, typer.Option("--no-baselines", help="Skip local-only and centralized.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write simulate.csv, simulate.json and simulate.png here.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Run the federation's training and aggregation on one machine to plan rounds and E.

    Example: flsilo simulate --sites 2 --shift none,invert --local-epochs 1,5,10,20
    --total-epochs 20 --target -0.95 --out sim/
    """
    set_json(json_out)
    if out is not None:  # refused now, not after the runs
        require_folder(out, "the --out folder", hint="pass a new folder; simulate creates it")
    from sim_kit.simulate import DataSource, SimSettings, load_sim_data, sweep

    grid = [
        (e, b)
        for e in _positive(local_epochs, "--local-epochs")
        for b in _positive(batch_size, "--batch-size")
    ]
    source = None
    if data is not None:
        needs_classes = plan_settings.get("task") != "sequence"  # the charset names its outputs
        if (needs_classes and not classes) or not input_shape:
            raise UsageError(
                "--data needs --classes and --input-shape (--input-shape alone for --task sequence)",
                hint="e.g. --classes normal,pneumonia --input-shape 1,64,64",
            )
        source = DataSource(
            data, data_format, name_list(classes or ""), int_list(input_shape, "--input-shape")
        )
    base = SimSettings(
        sites=sites,
        partition=partition,
        shifts=name_list(shift),
        schedule=schedule,
        total_epochs=total_epochs,
        model=model,
        plan=Plan(local_epochs=grid[0][0], batch_size=grid[0][1], **plan_settings),
        hub=hub,
        target=target,
        baselines=not no_baselines,
        pretrain_fraction=pretrain_fraction,
        pretrain_epochs=pretrain_epochs,
    )
    report = sweep(base, grid, load_sim_data(base, source), one_shot=one_shot, out=out, say=info)
    if json_out:
        emit_json(
            "simulate",
            True,
            {
                "runs": [to_jsonable(r) for r in report.runs],
                "one_shot": to_jsonable(report.one_shot),
                "files": [str(f) for f in report.files],
            },
        )
        return
    render(report, f"{sites} sites, {partition}, shift {shift}, strategy {hub.strategy}")


def render(report: SweepReport, title: str) -> None:
    table = Table(title=title)
    metric = report.runs[0].metric  # the task's primary metric (classify: accuracy)
    name = metric_name(metric)

    def fig(value: float | None) -> str:
        return show_figure(metric, value)

    for col in ("E", "B", "rounds", "start", f"final {name}", "rounds to target",
                f"{name} per round"):  # fmt: skip
        table.add_column(col)
    for r in report.runs:
        table.add_row(
            str(r.settings.plan.local_epochs),
            str(r.settings.plan.batch_size),
            str(r.rounds),
            fig(r.accuracy[0]),
            fig(r.accuracy[-1]),
            "-" if r.rounds_to_target is None else str(r.rounds_to_target),
            spark(r.accuracy),
        )
    console = stdout()
    console.print(table)
    first = report.runs[0]
    if first.dp_epsilon:
        spent = ", ".join(f"{k} {v:.2f}" for k, v in first.dp_epsilon.items())
        console.print(f"privacy spent (epsilon per site): {spent}; baselines are not private")
    if first.centralized is not None:
        local = ", ".join(f"{k} {fig(v)}" for k, v in first.local_only.items())
        console.print(f"centralized {fig(first.centralized)}; local only: {local}")
    if report.one_shot is not None:
        shot = report.one_shot
        console.print(
            f"one-shot averaging ({shot.local_epochs} local epochs, same total): "
            f"{fig(shot.accuracy)}"
        )
    for f in report.files:
        console.print(f"wrote {f}")
