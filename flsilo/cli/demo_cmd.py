"""``flsilo demo``: run a whole federation offline on bundled real data, and show the result."""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flsilo.cli.common import STATE, emit_json, info, set_json, stdout
from flsilo.runtime.cpu import configure_threads, current_threads


def demo(
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for every artifact (default: a new flsilo-demo/run-TIMESTAMP)."),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds (physical trips).")] = 5,
    local_epochs: Annotated[int, typer.Option(min=1, help="Local epochs per round.")] = 2,
    sites: Annotated[int, typer.Option(min=2, max=26, help="Number of sites.")] = 3,
    max_per_site: Annotated[
        int | None, typer.Option(help="Cap images per site (quick runs).")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed for the data split, the plan and the baselines.")
    ] = 7,
    model: Annotated[
        str | None, typer.Option(help="Model spec (default: a small CNN); logreg is quickest.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Three hospitals' worth of handwritten digits, federated through real signed files.

    Keys (passphrase 'flsilo-demo'), kits, training, bundles, aggregation, verify and
    audit --replay all run on files in --out, which stay there to inspect.
    Example: flsilo demo --out /tmp/flsilo-demo
    """
    set_json(json_out)
    if STATE.threads is None:  # the demo's models are tiny: more threads only contend
        configure_threads(1)
    from sim_kit.demo import DemoSettings, run_demo

    if out is None:
        out = Path("flsilo-demo") / time.strftime("run-%Y%m%d-%H%M%S")
    started = time.perf_counter()
    default = DemoSettings()
    settings = replace(
        default,
        sites=sites,
        rounds=rounds,
        model=model or default.model,
        plan=replace(default.plan, local_epochs=local_epochs, seed=seed),
        max_per_site=max_per_site,
    )
    report = run_demo(out, settings, info)
    seconds = time.perf_counter() - started
    if json_out:
        emit_json(
            "demo",
            report.audit.ok,
            {
                "out": str(out),
                "rounds": report.rounds,
                "accuracy": report.accuracy,
                "site_class_counts": report.site_samples,
                "verified_files": report.verified_files,
                "audit_ok": report.audit.ok,
                "final_package": str(report.federated_package),
                "seconds": round(seconds, 1),
                "seed": seed,
                "threads": current_threads(),
            },
        )
    else:
        out_console = stdout()
        out_console.print(accuracy_table(report.accuracy, rounds, local_epochs))
        out_console.print(
            f"Every arm starts from the same model and trains {rounds * local_epochs} epochs in all "
            f"on the federation's plan (B={settings.plan.batch_size}, lr {settings.plan.lr:g}); "
            "only the centralized baseline's lr is chosen, on a validation split held out from "
            "the pooled data. One seed: multi-seed, tuned tables are in docs/results.md."
        )
        out_console.print(
            f"{report.verified_files} artifacts verified, audit --replay "
            f"{'[green]passed[/]' if report.audit.ok else '[red]FAILED[/]'}; everything is in "
            f"{shlex.quote(str(out))} ({seconds:.0f}s). Try:"
        )
        out_console.print(
            f"  flsilo inspect {shlex.quote(str(report.federated_package))}", soft_wrap=True
        )
        root = report.audit.trust_root["fingerprint"] if report.audit.trust_root else "..."
        out_console.print(  # two lines that paste back as one command, within 80 columns
            f"  flsilo audit {shlex.quote(str(out / 'hub'))} \\\n      --hub-fingerprint {root}",
            soft_wrap=True,
        )
    if not report.audit.ok:
        raise typer.Exit(3)


def accuracy_table(accuracy: dict[str, float], rounds: int, local_epochs: int) -> Table:
    """The demo's result, grouped by what each row cost in trips across the air gap."""
    groups: dict[str, list[tuple[str, float]]] = {"no trip": [], "1 trip": [], "federated": []}
    for name, acc in accuracy.items():
        group, _, label = name.partition(": ")
        if group in groups and label:
            # "5 trips, periodic FedAvg ...": the trips are the group's heading already
            groups[group].append((label.split(", ", 1)[-1] if group == "federated" else label, acc))
        else:  # a site alone, or the pooled data no real federation could gather
            groups["no trip"].append((name, acc))
    trips = f"{rounds} trip{'s' if rounds != 1 else ''}"
    heading = {
        "no trip": "no trip",
        "1 trip": "1 trip",
        "federated": f"{trips},\n{local_epochs} local\nepoch{'s' if local_epochs != 1 else ''} each",
    }
    table = Table(title="held-out test accuracy, by trips across the air gap")
    table.add_column("trips")
    table.add_column("model")
    table.add_column("test accuracy", justify="right")
    for key, rows in groups.items():
        style = "bold green" if key == "federated" else ""
        for i, (label, acc) in enumerate(rows):
            cells: tuple[str, ...] = (label, f"{100 * acc:.1f}%")
            if style:
                cells = tuple(f"[{style}]{c}[/]" for c in cells)
            table.add_row(heading[key] if i == 0 else "", *cells, end_section=i == len(rows) - 1)
    return table
