"""``flsilo hub init``: a new federation from options or a reviewed plan file."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flsilo.cli.common import emit_json, info, passphrase_source, print_data, set_json
from flsilo.cli.options import int_list, name_list, with_settings
from flsilo.codes import Code
from flsilo.errors import UsageError
from flsilo.federation import DataSpec, FederationConfig, HubPolicy
from flsilo.keys import load_public_key
from flsilo.manifest import to_jsonable
from flsilo.plan import Plan, parse_schedule

PassphraseFile = Annotated[
    Path | None, typer.Option(help="Read the hub key's passphrase from this file.")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable report.")]


@with_settings()
def hub_init(  # keyword-only: with_settings adds options, typer reads the annotations
    *,
    ctx: typer.Context,
    hub_dir: Annotated[Path | None, typer.Argument(help="New hub workspace folder.")] = None,
    federation: Annotated[
        str | None,
        typer.Option(help="Federation id, e.g. chest-xray-2026 (required unless in --config)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="logreg, mlp[:hidden=200x200], cnn, resnet, or module:factory."),
    ] = None,
    classes: Annotated[str | None, typer.Option(help="Class names in index order: A,B,C.")] = None,
    input_shape: Annotated[
        str | None, typer.Option(help="C,H,W for images (1,28,28) or the feature count (13).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="The hub's private key (make one with 'flsilo keys new').")
    ] = None,
    plan_settings: dict[str, Any],
    hub: HubPolicy,
    schedule: Annotated[
        str,
        typer.Option(
            help="one-shot, few-shot:R, periodic:R, closed-form, closed-form+periodic:R "
            "or closed-form+few-shot:R; 'stats+' before any but one-shot adds a federation "
            "statistics round 0 (for --normalize/--standardize federation, --impute mean)."
        ),
    ] = "one-shot",
    local_epochs: Annotated[
        str, typer.Option(help="E for every round, or E1,E2,... per round.")
    ] = "1",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    label_column: Annotated[str, typer.Option(help="CSV label column.")] = "label",
    feature_columns: Annotated[
        str, typer.Option(help="CSV feature columns, in order (default: all others).")
    ] = "",
    init_weights: Annotated[
        Path | None,
        typer.Option(help="Pretrained start (.safetensors state dict); recommended for one-shot."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A plan file (the schema of federation.toml); options given here override it.",
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="Print a commented starting plan file and exit (no HUB_DIR)."
        ),
    ] = False,
    passphrase_file: PassphraseFile = None,
    json_out: JsonOut = False,
) -> None:
    """Create a hub workspace and its signed round-0 package; print the package path.

    Example: flsilo hub init hub --federation digits --model cnn --classes 0,1,2,3,4,5,6,7,8,9
    --input-shape 1,8,8 --key keys/hub --schedule periodic:5 --local-epochs 2 --min-sites 3

    Or from a reviewed file: flsilo hub init --print-config > plan.toml (edit it), then
    flsilo hub init hub --config plan.toml --key keys/hub
    """
    if print_config:
        from flsilo.cli.options import HUB_SETTINGS, PLAN_SETTINGS, PREPROCESS_SETTINGS
        from flsilo.planfile import template

        settings = PLAN_SETTINGS + PREPROCESS_SETTINGS + HUB_SETTINGS
        sys.stdout.write(template({s.name: s.help for s in settings}))
        return
    set_json(json_out)
    from hub_kit.setup import hub_init as do_init
    from hub_kit.setup import init_warnings

    given = _given_options(ctx)
    if hub_dir is None or key is None:
        raise UsageError(
            "hub init needs HUB_DIR and --key",
            code=Code.BAD_CONFIG,
            hint="e.g. flsilo hub init hub --config plan.toml --key keys/hub",
        )
    if config_file is not None:
        config = _config_from_file(config_file, given, locals(), plan_settings, hub)
    else:
        missing = [
            f"--{n.replace('_', '-')}"
            for n, v in (
                ("federation", federation),
                ("model", model),
                ("classes", classes),
                ("input_shape", input_shape),
            )
            if v is None
        ]
        if missing:
            raise UsageError(
                f"missing option{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                code=Code.BAD_CONFIG,
                hint="give them, or a plan file with --config (flsilo hub init --print-config)",
            )
        assert federation and model and classes and input_shape  # for mypy: checked above
        rounds = parse_schedule(schedule, int_list(local_epochs, "--local-epochs"))
        config = FederationConfig(
            federation=federation,
            model=model,
            classes=name_list(classes),
            input_shape=int_list(input_shape, "--input-shape"),
            schedule=rounds,
            plan=Plan(local_epochs=rounds.local_epochs[0], batch_size=batch_size, **plan_settings),
            hub=hub,
            data=DataSpec(label_column=label_column, feature_columns=name_list(feature_columns)),
        )
    package = do_init(hub_dir, config, key, passphrase_source(passphrase_file), init_weights)
    fingerprint = load_public_key(hub_dir / "hub.pub").fingerprint  # just written, from --key
    warnings = init_warnings(config)
    if json_out:
        emit_json(
            "hub init",
            True,
            {
                "hub": str(hub_dir),
                "package": str(package),
                "hub_fingerprint": fingerprint,
                "warnings": warnings,
            },
        )
        return
    info(f"created hub workspace {hub_dir}; enrol sites next (flsilo hub enroll)")
    info(f"hub key fingerprint {fingerprint}")
    info("write it down: sites and auditors confirm it with you by phone")
    for warning in warnings:
        info(f"warning: {warning}")
    print_data(str(package))


def _given_options(ctx: typer.Context) -> set[str]:
    """Names of the options typed on the command line (not left at their defaults)."""
    from typer._click.core import ParameterSource  # typer's own click, as typer.Context is

    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {name for name in ctx.params if ctx.get_parameter_source(name) in typed}


def _config_from_file(
    path: Path,
    given: set[str],
    values: dict[str, Any],
    plan_settings: dict[str, Any],
    hub: HubPolicy,
) -> FederationConfig:
    """The plan file's federation with every option typed on the command line laid over it."""
    from flsilo import planfile
    from flsilo.plan import Schedule, schedule_text

    data = planfile.load(path)
    top: dict[str, Any] = {}
    if "federation" in given:
        top["federation"] = values["federation"]
    if "model" in given:
        top["model"] = values["model"]
    if "classes" in given:
        top["classes"] = list(name_list(values["classes"]))
    if "input_shape" in given:
        top["input_shape"] = list(int_list(values["input_shape"], "--input-shape"))
    if given & {"schedule", "local_epochs"}:
        current = data.get("schedule", {})
        text = values["schedule"]
        if "schedule" not in given and isinstance(current, dict):
            text = schedule_text(Schedule(current["kind"], current["rounds"], (1,)))
        epochs = int_list(values["local_epochs"], "--local-epochs")
        if "local_epochs" not in given and isinstance(current, dict):
            epochs = tuple(current.get("local_epochs", [1]))[:1]
        top["schedule"] = planfile.schedule_table(parse_schedule(text, epochs))
    plan = {k: to_jsonable(v) for k, v in plan_settings.items() if k in given}
    pre = plan_settings.get("preprocess")
    typed = [f.name for f in dataclasses.fields(pre) if f.name in given] if pre else []
    if typed:  # [plan.preprocess] options typed: laid over the file's table one by one
        plan["preprocess"] = {name: to_jsonable(getattr(pre, name)) for name in typed}
    if "batch_size" in given:
        plan["batch_size"] = values["batch_size"]
    hub_table = {
        f.name: to_jsonable(getattr(hub, f.name))
        for f in dataclasses.fields(hub)
        if f.name in given
    }
    data_table = {
        k: to_jsonable(v)
        for k, v in (
            ("label_column", values["label_column"]),
            ("feature_columns", list(name_list(values["feature_columns"]))),
        )
        if k in given
    }
    overrides = {**top, "plan": plan, "hub": hub_table, "data": data_table}
    return planfile.build(planfile.merge(data, overrides), path)
