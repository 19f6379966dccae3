"""``flsilo simulate``: try schedules, partitions and strategies on one machine before any trip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flsilo.cli.common import emit_json, info, set_json, stdout
from flsilo.errors import UsageError
from flsilo.manifest import to_jsonable


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise UsageError(f"{what} {text!r} must be comma-separated whole numbers") from exc
    if not values or min(values) < 1:
        raise UsageError(f"{what} needs positive values")
    return values


def spark(values: list[float]) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    return "".join(bars[min(8, max(0, round(v * 8)))] for v in values)


def simulate(
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
    lr: Annotated[float, typer.Option()] = 0.05,
    optimizer: Annotated[str, typer.Option()] = "sgd",
    strategy: Annotated[
        str, typer.Option(help="fedavg, mean, median, trimmed-mean:BETA.")
    ] = "fedavg",
    seed: Annotated[int, typer.Option()] = 0,
    target: Annotated[
        float | None,
        typer.Option(help="Accuracy to reach: 0.9 absolute, or -0.95 for 95% of centralized."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="imagefolder, csv or npz data (default: the bundled handwritten digits)."
        ),
    ] = None,
    data_format: Annotated[
        str | None, typer.Option(help="imagefolder, csv or npz (default: guessed).")
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="Class names in index order (needed for --data).")
    ] = None,
    input_shape: Annotated[
        str | None, typer.Option(help="C,H,W or feature count (needed for --data).")
    ] = None,
    one_shot: Annotated[
        bool, typer.Option("--one-shot", help="Also report one-shot averaging.")
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

    from sim_kit.simulate import (
        SimSettings,
        load_sim_data,
        one_shot_average,
        run_simulation,
        write_outputs,
    )

    grid = [
        (e, b)
        for e in _ints(local_epochs, "--local-epochs")
        for b in _ints(batch_size, "--batch-size")
    ]
    base = SimSettings(
        sites=sites,
        partition=partition,
        shifts=tuple(s.strip() for s in shift.split(",")),
        schedule=schedule,
        total_epochs=total_epochs,
        model=model,
        lr=lr,
        optimizer=optimizer,
        strategy=strategy,
        seed=seed,
        target=target,
        baselines=not no_baselines,
        pretrain_fraction=pretrain_fraction,
    )
    loaded = None
    if data is not None:
        from flsilo.federation import DataSpec
        from site_kit.data import load_dataset

        if not classes or not input_shape:
            raise UsageError(
                "--data needs --classes and --input-shape",
                hint="e.g. --classes normal,pneumonia --input-shape 1,64,64",
            )
        names = tuple(c.strip() for c in classes.split(",") if c.strip())
        shape = tuple(_ints(input_shape, "--input-shape"))
        dataset = load_dataset(data, data_format, names, shape, DataSpec())
        loaded = (dataset.x, dataset.y, names)
    sim_data = load_sim_data(base, loaded)
    results = []
    for i, (e, b) in enumerate(grid):
        settings = SimSettings(
            **{
                **base.__dict__,
                "local_epochs": e,
                "batch_size": b,
                "baselines": base.baselines and i == 0,
            }
        )
        results.append(run_simulation(settings, sim_data, info))
    if results[0].centralized is not None and target is not None and target < 0:
        for r in results[1:]:
            r.centralized = results[0].centralized
            r.target_accuracy = -target * results[0].centralized
            r.rounds_to_target = next(
                (k for k, a in enumerate(r.accuracy) if a >= r.target_accuracy), None
            )
    shot = (
        one_shot_average(base.__class__(**{**base.__dict__, "local_epochs": grid[0][0]}), sim_data)
        if one_shot
        else None
    )
    files = write_outputs(results, out) if out else []
    if json_out:
        emit_json(
            "simulate",
            True,
            {
                "runs": [to_jsonable(r) for r in results],
                "one_shot": shot,
                "files": [str(f) for f in files],
            },
        )
        return
    table = Table(title=f"{sites} sites, {partition}, shift {shift}, strategy {strategy}")
    for col in (
        "E",
        "B",
        "rounds",
        "start",
        "final accuracy",
        "rounds to target",
        "accuracy per round",
    ):
        table.add_column(col)
    for r in results:
        table.add_row(
            str(r.settings.local_epochs),
            str(r.settings.batch_size),
            str(r.rounds),
            f"{100 * r.accuracy[0]:.1f}%",
            f"{100 * r.accuracy[-1]:.1f}%",
            "-" if r.rounds_to_target is None else str(r.rounds_to_target),
            spark(r.accuracy),
        )
    console = stdout()
    console.print(table)
    first = results[0]
    if first.centralized is not None:
        local = ", ".join(f"{k} {100 * v:.1f}%" for k, v in first.local_only.items())
        console.print(f"centralized {100 * first.centralized:.1f}%; local only: {local}")
    if shot is not None:
        console.print(f"one-shot averaging: {100 * shot:.1f}%")
    for f in files:
        console.print(f"wrote {f}")
