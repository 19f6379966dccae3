"""``flsilo hub init``: a new federation from options or a reviewed plan file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flsilo.cli.common import emit_json, info, passphrase_source, print_data, set_json
from flsilo.cli.options import int_list, name_list, with_settings
from flsilo.plans.federation import HubPolicy
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.signing.keys import load_public_key

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
        typer.Option(
            help="logreg, mlp[:hidden=200x200], cnn, resnet, crnn, detector, torchvision:NAME, "
            "timm:NAME, or module:factory (docs/reference/models.md)."
        ),
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
        from flsilo.plans.planfile import template

        settings = PLAN_SETTINGS + PREPROCESS_SETTINGS + HUB_SETTINGS
        sys.stdout.write(template({s.name: s.help for s in settings}))
        return
    set_json(json_out)
    from hub_kit.initconfig import InitOptions, federation_config
    from hub_kit.setup import hub_init as do_init
    from hub_kit.setup import init_warnings

    if hub_dir is None or key is None:
        raise UsageError(
            "hub init needs HUB_DIR and --key",
            code=Code.BAD_CONFIG,
            hint="e.g. flsilo hub init hub --config plan.toml --key keys/hub",
        )
    options = InitOptions(
        hub=hub,
        plan_settings=plan_settings,
        federation=federation,
        model=model,
        classes=name_list(classes) if classes is not None else None,
        input_shape=int_list(input_shape, "--input-shape") if input_shape is not None else None,
        schedule=schedule,
        local_epochs=int_list(local_epochs, "--local-epochs"),
        batch_size=batch_size,
        label_column=label_column,
        feature_columns=name_list(feature_columns),
        given=frozenset(_given_options(ctx)),
    )
    config = federation_config(options, config_file)
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
