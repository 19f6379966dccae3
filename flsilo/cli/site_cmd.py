"""``flsilo site init``, ``flsilo train`` and ``flsilo evaluate``: the site operator's commands."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flsilo.cli.common import (
    STATE,
    emit_json,
    info,
    passphrase_source,
    print_data,
    set_json,
    stderr,
    stdout,
)
from flsilo.cli.progress import ProgressPrinter
from flsilo.cli.trust_options import Hub, Key, Signers, Site
from flsilo.format.manifest import to_jsonable
from flsilo.runtime.errors import UsageError
from flsilo.signing.claims import show_metric

app = typer.Typer(help="Set up a site workspace from a hub kit.", no_args_is_help=True)
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable report.")]
DataFormat = Annotated[
    str | None,
    typer.Option(
        help="imagefolder, images-csv, csv, npz, dicom, video, yolo or coco (default: guessed)."
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        help="Processes that decode data while the main process trains; 0 decodes in the "
        "main process (default: min(2, cores - 1)). The result does not depend on it.",
        min=0,
    ),
]


@app.command("init", no_args_is_help=True)
def site_init(
    site_dir: Annotated[Path, typer.Argument(help="New site workspace folder.")],
    kit: Annotated[Path, typer.Option(help="The kit folder the hub sent.")],
    site_id: Annotated[str, typer.Option(help="This site's id, as enrolled at the hub.")],
    key: Annotated[
        Path, typer.Option(help="This site's private key (its .pub must sit beside it).")
    ],
    hub_fingerprint: Annotated[
        str,
        typer.Option(
            help="The hub key's fingerprint as the hub administrator read it to you by phone "
            "(the SHA256: prefix may be left out)."
        ),
    ],
    data: Annotated[
        Path | None, typer.Option(help="Default training data for 'flsilo train'.")
    ] = None,
    data_format: DataFormat = None,
    json_out: JsonOut = False,
) -> None:
    """Create a site workspace from a hub kit; the kit's package is verified on the way in.

    The kit must hold the hub key whose fingerprint you confirmed by phone, and be made for
    this site key. Example: flsilo site init site --kit kit-site-a --site-id site-a
    --key keys/site-a --hub-fingerprint SHA256:NxPKs2... --data images/
    """
    set_json(json_out)
    from site_kit.setdata import check_data_path
    from site_kit.workspace import SiteWorkspace

    if data is not None:  # refused now, not at the first training run weeks later
        check_data_path(data, data_format)
    ws = SiteWorkspace.init(site_dir, kit, site_id, key, data, data_format, hub_fingerprint)
    packages = sorted(str(p) for p in ws.packages.glob("*.safetensors"))
    if json_out:
        emit_json("site init", True, {"site": str(site_dir), "packages": packages})
        return
    info(
        f"site workspace ready; train with: flsilo train {shlex.quote(packages[-1]) if packages else 'PACKAGE'} --site {shlex.quote(str(site_dir))}"
    )
    print_data(str(site_dir))


@app.command("set-data", no_args_is_help=True)
def site_set_data(
    site_dir: Annotated[Path, typer.Argument(help="Site workspace.")],
    path: Annotated[Path, typer.Argument(help="The site's training data (folder or file).")],
    data_format: DataFormat = None,
    json_out: JsonOut = False,
) -> None:
    """Point the site at its training data; the change is kept in the site's record.

    The path must exist and its format be one flsilo reads (guessed when not given).
    Example: flsilo site set-data site /data/xray-2026 --data-format imagefolder
    """
    set_json(json_out)
    from site_kit.setdata import set_data

    change = set_data(site_dir, path, data_format)
    if json_out:
        emit_json("site set-data", True, {"site_dir": str(site_dir), **to_jsonable(change)})
        return
    info(f"site {change.site} now trains on {path} (was {change.old_data or 'none'})")
    print_data(str(path))


@app.command("rekey", no_args_is_help=True)
def site_rekey(
    site_dir: Annotated[Path, typer.Argument(help="Site workspace.")],
    key: Annotated[
        Path,
        typer.Option(
            help="The new private key the hub enrolled ('flsilo hub rekey'); its .pub beside it."
        ),
    ],
    kit: Annotated[
        Path | None,
        typer.Option(
            help="A kit the hub made after the rekey: the new key must be the one it names."
        ),
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="File holding the new key's passphrase.")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Switch this site to its new key after the hub re-enrolled it (site key rotation).

    The new key is unlocked once and, with --kit, checked against the key the hub enrolled;
    the change goes into the site's record, then site.toml is replaced atomically.
    Example: flsilo site rekey site --key keys/site-a-2027 --kit kit-site-a-2027
    """
    set_json(json_out)
    from site_kit.rekey import rekey

    done = rekey(site_dir, key, passphrase_source(passphrase_file), kit)
    if json_out:
        emit_json("site rekey", True, {"site_dir": str(site_dir), **to_jsonable(done)})
        return
    out = stdout()
    out.print(f"site {done.site} now signs with its new key:")
    out.print(f"  old {done.old_fingerprint}\n  new {done.new_fingerprint}")
    if done.checked_against_kit is None:
        info(
            "not checked against a kit: the hub accepts the next bundle only if it enrolled "
            "this key (give --kit with a kit made after 'flsilo hub rekey' to check now)"
        )
    info(
        "bundles already in outbox/ and not yet accepted were signed with the old key: "
        "delete them (and their .sig) and train again"
    )


def train(
    package: Annotated[Path, typer.Argument(help="The package from the hub (its .sig beside it).")],
    site: Annotated[Path, typer.Option(help="Site workspace.")],
    data: Annotated[
        Path | None, typer.Option(help="Training data (default: the one set at site init).")
    ] = None,
    data_format: DataFormat = None,
    val: Annotated[
        Path | None, typer.Option(help="Separate validation data (default: a seeded split).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip and count unusable records.")
    ] = False,
    key: Annotated[
        Path | None,
        typer.Option(help="The site's private key, if not where 'site init' recorded it."),
    ] = None,
    accept_expired: Annotated[
        bool,
        typer.Option(
            "--accept-expired",
            help="Train on a package past its expiry anyway (recorded in the bundle).",
        ),
    ] = False,
    workers: Workers = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Keep decoded images at the plan's size in this folder and read them from "
            "there (for data slow to decode: DICOM, video); rebuilt when the data changes."
        ),
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the site key's passphrase from this file.")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Verify PACKAGE, train per its plan, write the signed bundle to SITE/outbox; print its path.

    Rerun the same command after an interruption: finished epochs are not redone.
    Example: flsilo train site/packages/digits-r0000.safetensors --site site
    """
    set_json(json_out)
    from site_kit.round import TrainRequest, train_round

    request = TrainRequest(
        data=data,
        data_format=data_format,
        val=val,
        device=device,
        skip_bad=skip_bad,
        key=key,
        accept_expired=accept_expired,
        workers=workers,
        cache=cache,
    )
    with ProgressPrinter(quiet=json_out) as printer:
        outcome = train_round(
            package, site, request, passphrase=passphrase_source(passphrase_file), progress=printer
        )
    if outcome.rank != 0:
        return
    report = {
        "bundle": str(outcome.bundle),
        "sha256": outcome.sha256,
        "train_samples": outcome.train_samples,
        "val_samples": outcome.val_samples,
        "skipped": outcome.skipped,
        "class_counts": outcome.class_counts,
        "epochs_run": outcome.result.epochs_run,
        "resumed_from_epoch": outcome.result.resumed_from_epoch,
        "seconds": round(outcome.result.seconds, 3),
        "samples_per_second": round(outcome.result.samples_per_second, 1),
        "global_model": to_jsonable(outcome.global_eval.metrics()) if outcome.global_eval else None,
        "trained_model": to_jsonable(outcome.trained_eval.metrics())
        if outcome.trained_eval
        else None,
    }
    if json_out:
        emit_json("train", True, report)
        return
    err = stderr()
    task = outcome.manifest.model.task_spec.name if outcome.manifest else "classify"
    pct = _validation_figure(task)
    err.print(
        f"trained on {outcome.train_samples} samples ({outcome.skipped} skipped); validation on "
        f"{outcome.val_samples}: global model {pct(outcome.global_eval)} -> trained {pct(outcome.trained_eval)}"
    )
    err.print("carry BOTH files to the hub:")
    print_data(str(outcome.bundle))
    err.print(f"{outcome.bundle}.sig", soft_wrap=True)


def _validation_figure(task: str) -> Any:
    """How ``train`` shows one validation pass: ``93.0% (loss 0.210)`` for classify, else
    the task's primary metric by name (``exact match 88.2% (loss 0.412)``)."""
    from flsilo.tasks import primary_metric

    metric = primary_metric(task)

    def shown(e: Any) -> str:
        if e is None:
            return "-"
        if metric == "accuracy":
            return f"{100 * e.accuracy:.1f}% (loss {e.loss:.3f})"
        return f"{show_metric(metric, e.values.get(metric))} (loss {e.loss:.3f})"

    return shown


def evaluate(
    package: Annotated[Path, typer.Argument(help="A package (or bundle) to evaluate.")],
    data: Annotated[Path, typer.Option(help="Labeled data to evaluate on.")],
    data_format: DataFormat = None,
    site: Site = None,
    hub: Hub = None,
    signers: Signers = None,
    key: Key = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip and count unusable records.")
    ] = False,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="With --site: write a signed evaluation report (rNNNN-SITE.eval.json and "
            ".sig) into the outbox, for the hub. Never on the site's training data.",
        ),
    ] = False,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="With --report: the site key's passphrase file.")
    ] = None,
    workers: Workers = None,
    json_out: JsonOut = False,
) -> None:
    """Verify a package, then report accuracy, loss, per-class accuracy and a confusion matrix.

    Example: flsilo evaluate site/packages/digits-r0005.safetensors --data test/ --site site
    At the hub: flsilo evaluate hub/packages/digits-r0005.safetensors --data test/ --hub hub
    For the hub, signed: flsilo evaluate PACKAGE --site site --data held-out/ --report
    """
    set_json(json_out)
    if report:
        _evaluation_report(package, data, site, data_format, device, skip_bad, passphrase_file)
        return
    from flsilo.cli.trust_options import chosen_trust
    from site_kit.package_eval import evaluate_package

    trust = chosen_trust(site, hub, signers, key)
    scored = evaluate_package(
        package,
        data,
        trust,
        data_format=data_format,
        device=device,
        skip_bad=skip_bad,
        workers=workers,
    )
    result = scored.result
    if json_out:
        emit_json(
            "evaluate",
            True,
            {
                "package": str(package),
                "classes": list(scored.classes),
                "skipped": scored.skipped,
                **evaluation_json(result, scored.figures),
            },
        )
        return
    out = stdout()
    if "map50" in result.values:
        from flsilo.cli.detect_render import print_detection

        print_detection(out, package.name, scored)
        return
    out.print(_evaluation_line(package.name, scored))
    if result.confusion:
        out.print(_confusion_table(scored.classes, result))
    if "per_class" in scored.figures:  # not for a task without classes (sequence)
        out.print(_per_class_table(scored.figures))


def _evaluation_line(name: str, scored: Any) -> str:
    """``evaluate``'s first line: the task's primary metric first, by name, then its other
    whole-set figures in the same format (classify: the accuracy, as ever)."""
    from flsilo.tasks import primary_metric

    result = scored.result
    counted = f"on {result.samples} samples ({scored.skipped} skipped)"
    metric = primary_metric(scored.verified.manifest.model.task_spec.name)
    if metric == "accuracy":
        others = ", ".join(
            f"{k} {v:.4f}" for k, v in result.values.items() if k != "accuracy" and "." not in k
        )
        return (
            f"{name}: accuracy [bold]{100 * result.accuracy:.2f}%[/], loss {result.loss:.4f} "
            f"{counted}" + (f"; {others}" if others else "")
        )
    values = result.values
    rest = [k for k in values if k not in (metric, "accuracy") and "." not in k]
    shown = ", ".join([f"[bold]{show_metric(metric, values.get(metric))}[/]"]
                      + [show_metric(k, values[k]) for k in rest])  # fmt: skip
    return f"{name}: {shown}, loss {result.loss:.4f} {counted}"


def _confusion_table(classes: tuple[str, ...], result: Any) -> Table:
    # A short title: rich wraps a title wider than the table (two classes make a narrow one).
    table = Table(title="confusion matrix")
    table.add_column("true \\ predicted")
    table.add_column("accuracy")
    for name in classes:
        table.add_column(name, justify="right")
    for name, acc, row in zip(classes, result.per_class_accuracy, result.confusion, strict=True):
        table.add_row(name, f"{100 * acc:.1f}%" if acc is not None else "-", *(str(v) for v in row))
    return table


def evaluation_json(result: Any, figures: dict[str, Any]) -> dict[str, Any]:
    """``evaluate --json``'s figures: loss, accuracy, the task's own values, per class."""
    out: dict[str, Any] = {
        k: to_jsonable(getattr(result, k))
        for k in ("loss", "accuracy", "samples", "per_class_accuracy", "confusion")
    }
    if set(result.values) != {"accuracy"}:
        out["values"] = dict(result.values)
        out.update({k: v for k, v in result.values.items() if k not in out})  # map50, ...
    out.update({k: v for k, v in figures.items() if k not in ("samples", "accuracy", "confusion")})
    return out


def _per_class_table(figures: dict[str, Any]) -> Table:
    """Sensitivity and specificity (with 95% bootstrap intervals), AUROC and AP per class."""

    def rate(row: dict[str, Any], name: str) -> str:
        value, ci = row.get(name), (row.get("ci95") or {}).get(name)
        if value is None:
            return "-"
        return f"{100 * value:.1f}" + (f" ({100 * ci[0]:.0f}-{100 * ci[1]:.0f})" if ci else "")

    table = Table(title="per class (%, 95% interval)")
    for col in ("class", "sensitivity", "specificity", "AUROC", "AP"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in figures["per_class"].items():
        table.add_row(
            name,
            rate(row, "sensitivity"),
            rate(row, "specificity"),
            *(f"{row[k]:.3f}" if row.get(k) is not None else "-" for k in ("auroc", "ap")),
        )
    return table


def _evaluation_report(
    package: Path,
    data: Path,
    site: Path | None,
    data_format: str | None,
    device: str,
    skip_bad: bool,
    passphrase_file: Path | None,
) -> None:
    """``evaluate --report``: the signed report into the outbox; its path on stdout."""
    if site is None:
        raise UsageError(
            "--report needs --site: the report is signed with the site key",
            hint="flsilo evaluate PACKAGE --site SITE_DIR --data HELD_OUT --report",
        )
    from site_kit.evalreport import report_package

    path, doc = report_package(
        site,
        package,
        data,
        passphrase=passphrase_source(passphrase_file),
        data_format=data_format,
        device=device,
        skip_bad=skip_bad,
    )
    if STATE.json:
        emit_json("evaluate", True, {"report": str(path), **doc})
        return
    figures = doc["metrics"]
    from flsilo.tasks import primary_metric

    metric = primary_metric(str(doc.get("task", "classify")))
    value = figures.get(metric)
    if metric == "accuracy":
        shown = f"accuracy {100 * value:.2f}% " if isinstance(value, float) else ""
    else:
        shown = f"{show_metric(metric, value)} " if isinstance(value, float) else ""
    info(
        f"{doc['package']}: {shown}on {doc['samples']} samples; signed report written; "
        "carry it and its .sig to the hub"
    )
    print_data(str(path))
    print_data(str(path) + ".sig")
