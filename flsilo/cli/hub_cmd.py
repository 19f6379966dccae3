"""``flsilo hub init|enroll|revoke|kit|status`` and ``flsilo aggregate``."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from flsilo.cli.common import emit_json, info, passphrase_source, print_data, say, set_json, stdout
from flsilo.cli.options import STRATEGY_HELP, int_list, name_list, with_settings
from flsilo.codes import Code
from flsilo.errors import UsageError
from flsilo.federation import DataSpec, FederationConfig, HubPolicy
from flsilo.keys import load_public_key
from flsilo.manifest import to_jsonable
from flsilo.plan import Plan, parse_schedule

app = typer.Typer(
    help="Run the hub: create a federation, enrol sites, make kits.", no_args_is_help=True
)

PassphraseFile = Annotated[
    Path | None, typer.Option(help="Read the hub key's passphrase from this file.")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable report.")]
NormGate = Annotated[
    float | None,
    typer.Option(help="Override the federation's norm gate for this round.", show_default=False),
]
CosineGate = Annotated[
    float | None,
    typer.Option(
        help="Override the federation's cosine gate for this round: quarantine a weight update "
        "whose cosine to the round's median update is below this (-1 < MIN < 1).",
        show_default=False,
    ),
]
MaxWeightShare = Annotated[
    float | None,
    typer.Option(
        help="Override the federation's weight-share cap for this round.", show_default=False
    ),
]


@app.command("init", no_args_is_help=True)
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


@app.command("enroll", no_args_is_help=True)
def hub_enroll(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    site_id: Annotated[str, typer.Argument(help="The site's id, e.g. site-a.")],
    site_pubkey: Annotated[Path, typer.Argument(help="The site's public key file (.pub).")],
    fingerprint: Annotated[str, typer.Option(help="Fingerprint the site read to you out of band.")],
    role: Annotated[
        str,
        typer.Option(help="site (signs bundles) or release (an officer who signs final packages)."),
    ] = "site",
    passphrase_file: PassphraseFile = None,
    json_out: JsonOut = False,
) -> None:
    """Trust a site's (or release officer's) key after confirming its fingerprint out of band.

    Example: flsilo hub enroll hub site-a site-a.pub --fingerprint SHA256:NxPKs2...
    """
    set_json(json_out)
    from hub_kit.enrolment import enroll
    from hub_kit.workspace import HubWorkspace

    ws = HubWorkspace.open(hub_dir)
    fp = enroll(
        ws,
        site_id,
        site_pubkey,
        fingerprint,
        role=role,
        passphrase=passphrase_source(passphrase_file),
    )
    if json_out:
        emit_json("hub enroll", True, {"site": site_id, "fingerprint": fp, "role": role})
        return
    if role == "release":
        say(f"enrolled release officer {site_id} ({fp}); final packages name them")
        return
    say(
        f"enrolled {site_id} ({fp}); next: flsilo hub kit {shlex.quote(str(hub_dir))} {site_id} --out KIT_DIR"
    )


@app.command("revoke", no_args_is_help=True)
def hub_revoke(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    site_id: Annotated[str, typer.Argument(help="Site whose key is no longer trusted.")],
    passphrase_file: PassphraseFile = None,
    json_out: JsonOut = False,
) -> None:
    """Stop trusting a site's key from now on (a stolen key, a site leaving).

    Example: flsilo hub revoke hub site-b
    """
    set_json(json_out)
    from hub_kit.enrolment import revoke
    from hub_kit.workspace import HubWorkspace

    when = revoke(
        HubWorkspace.open(hub_dir), site_id, passphrase=passphrase_source(passphrase_file)
    )
    if json_out:
        emit_json("hub revoke", True, {"site": site_id, "valid_before": when})
        return
    say(f"revoked {site_id}: bundles signed by its key are refused from {when}")


@app.command("rekey", no_args_is_help=True)
def hub_rekey(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    site_id: Annotated[str, typer.Argument(help="Enrolled site (or officer) whose key changes.")],
    new_pubkey: Annotated[Path, typer.Argument(help="The new public key file (.pub).")],
    fingerprint: Annotated[
        str, typer.Option(help="Fingerprint of the new key, read to you out of band.")
    ],
    passphrase_file: PassphraseFile = None,
    json_out: JsonOut = False,
) -> None:
    """Replace a site's key (site key rotation) after confirming the new fingerprint.

    Bundles accepted under the old key still audit; bundles signed with the old key that
    arrive from now on are refused.
    Example: flsilo hub rekey hub site-a site-a-2027.pub --fingerprint SHA256:...
    """
    set_json(json_out)
    from hub_kit.enrolment import rekey
    from hub_kit.workspace import HubWorkspace

    old, new = rekey(
        HubWorkspace.open(hub_dir),
        site_id,
        new_pubkey,
        fingerprint,
        passphrase=passphrase_source(passphrase_file),
    )
    if json_out:
        emit_json("hub rekey", True, {"site": site_id, "old": old, "new": new})
        return
    say(f"{site_id}: key {old} replaced by {new}; bundles signed by the old key are refused")
    say(
        f"make the site a kit to check its switch ('flsilo site rekey ... --kit KIT_DIR'): "
        f"flsilo hub kit {shlex.quote(str(hub_dir))} {site_id} --out KIT_DIR"
    )


@app.command("rotate-key", no_args_is_help=True)
def hub_rotate_key(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    new_key: Annotated[Path, typer.Option(help="The new hub private key ('flsilo keys new').")],
    passphrase_file: PassphraseFile = None,
    json_out: JsonOut = False,
) -> None:
    """Rotate the hub key: a statement signed by the old and the new key (flsilo-root).

    Every later package carries the statement; sites follow it from the key they confirmed.
    Example: flsilo hub rotate-key hub --new-key keys/hub-2027
    """
    set_json(json_out)
    from hub_kit.rotation import rotate_key
    from hub_kit.workspace import HubWorkspace

    old, new, package = rotate_key(
        HubWorkspace.open(hub_dir), new_key, passphrase_source(passphrase_file)
    )
    from flsilo.artifact import sig_path
    from flsilo.rotation import chain_path

    carry = [package, sig_path(package), chain_path(package)]
    if json_out:
        emit_json(
            "hub rotate-key", True, {"old": old, "new": new, "carry": [str(p) for p in carry]}
        )
        return
    out = stdout()
    out.print(f"hub key rotated:\n  old {old}\n  new {new}")
    out.print("read the new fingerprint to sites when you next call")
    out.print(
        f"sites that have not received {package.name} yet: carry these three files "
        "(the old key's signature is kept beside them as .pre-rotation-N.sig):"
    )
    for p in carry:
        out.print(f"  {shlex.quote(str(p))}", soft_wrap=True)


@app.command("kit", no_args_is_help=True)
def hub_kit(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    site_id: Annotated[str, typer.Argument(help="Enrolled site the kit is for.")],
    out: Annotated[Path, typer.Option(help="New folder to write the kit into.")],
    wheelhouse: Annotated[
        Path | None,
        typer.Option(help="A wheelhouse signed by this hub, copied in as KIT/wheelhouse."),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Write a site kit: federation.toml, hub.pub, the current package and .sig, a README.

    Example: flsilo hub kit hub site-a --out kits/site-a --wheelhouse wheels-cpu
    """
    set_json(json_out)
    from hub_kit.kit import make_kit
    from hub_kit.workspace import HubWorkspace

    path = make_kit(HubWorkspace.open(hub_dir), site_id, out, wheelhouse=wheelhouse)
    if json_out:
        emit_json("hub kit", True, {"site": site_id, "kit": str(path)})
        return
    print_data(str(path))


@app.command("status", no_args_is_help=True)
def hub_status(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    inbox: Annotated[
        Path | None,
        typer.Option(
            help="Check the bundles in this folder (a stick): what the round would accept "
            "or reject and why; the same report as 'aggregate --dry-run'."
        ),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Show the round, enrolled sites, bundles in the inbox and who is still missing.

    Example: flsilo hub status hub --inbox /media/usb/bundles
    """
    set_json(json_out)
    if inbox is not None:
        from flsilo.cli.dryrun_cmd import show_inbox_report

        show_inbox_report(
            hub_dir, inbox, strategy=None, min_sites=None, json_out=json_out, command="hub status"
        )
        return
    from hub_kit.status import status

    st = status(hub_dir)
    if json_out:
        emit_json("hub status", True, to_jsonable(st))
        return
    out = stdout()
    out.print(
        f"federation [bold]{st.federation}[/] — round {st.round} of {st.rounds} ({st.schedule})"
        + (" — [green]complete[/]" if st.final else "")
    )
    out.print(f"current package: {st.current_package}")
    from hub_kit.privacy import spent_text

    if st.dp_plan:
        out.print(f"differential privacy: {st.dp_plan}")
    dp = st.dp_budget is not None
    # No outer box: a site id, a whole fingerprint (50) and the state fit in 80 columns.
    table = Table(title="sites", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("site", "fingerprint", "state", "in inbox") + (("epsilon spent",) * dp):
        table.add_column(col, overflow="fold")
    for s in st.sites:
        table.add_row(
            s["site"],
            s["fingerprint"],
            "revoked " + s["revoked_at"] if s["revoked_at"] else "active",
            "yes" if s["bundle_present"] else "-",
            *([spent_text(s["dp_epsilon_spent"], st.dp_budget)] if dp else []),
        )
    out.print(table)
    if st.missing:
        out.print(f"missing bundles for round {st.round}: {', '.join(st.missing)}")
    for note in st.unrecorded:
        out.print(f"[yellow]not in the event log:[/] {note}")


def aggregate(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace.")],
    inbox: Annotated[
        Path | None, typer.Option(help="Folder holding carried bundles (default HUB_DIR/inbox).")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help=STRATEGY_HELP + " Default: the federation's.")
    ] = None,
    min_sites: Annotated[
        int | None, typer.Option(help="Override the federation's minimum.")
    ] = None,
    norm_gate: NormGate = None,
    cosine_gate: CosineGate = None,
    max_weight_share: MaxWeightShare = None,
    key: Annotated[
        Path | None,
        typer.Option(help="The hub's private key, if not where 'hub init' recorded it."),
    ] = None,
    server_optimizer: Annotated[
        str | None,
        typer.Option(help="This round only: none, fedavgm, fedadam or fedyogi."),
    ] = None,
    server_lr: Annotated[float | None, typer.Option(help="This round's server lr.")] = None,
    server_momentum: Annotated[
        float | None, typer.Option(help="This round's fedavgm momentum.")
    ] = None,
    server_betas: Annotated[
        str | None, typer.Option(help="This round's fedadam/fedyogi B1,B2.")
    ] = None,
    server_tau: Annotated[float | None, typer.Option(help="This round's tau.")] = None,
    passphrase_file: PassphraseFile = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only report what would be accepted or rejected and why; change nothing, "
            "ask no passphrase.",
        ),
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Verify the inbox, quarantine rejects, aggregate the round, sign the next package.

    Server optimizer options apply to this round only (recorded in the package and the log).
    --dry-run checks the inbox with the same gates and changes nothing.

    Example: flsilo aggregate hub --inbox /media/usb/bundles --server-optimizer fedavgm
    """
    set_json(json_out)
    if dry_run:
        from flsilo.cli.dryrun_cmd import show_inbox_report

        show_inbox_report(
            hub_dir,
            inbox,
            strategy=strategy,
            min_sites=min_sites,
            json_out=json_out,
            command="aggregate",
        )
        return
    from flsilo.cli.options import parse_betas, parse_server_optimizer
    from flsilo.cli.round_report import render_aggregate
    from hub_kit.aggregate import aggregate_round
    from hub_kit.server_optimizers import server_optimizer_for
    from hub_kit.workspace import HubWorkspace

    server = server_optimizer_for(
        HubWorkspace.open(hub_dir).config.hub,
        parse_server_optimizer(server_optimizer) if server_optimizer else None,
        server_lr,
        server_momentum,
        parse_betas(server_betas),
        server_tau,
    )

    report = aggregate_round(
        hub_dir,
        inbox=inbox,
        strategy=strategy,
        min_sites=min_sites,
        norm_gate=norm_gate,
        max_weight_share=max_weight_share,
        key=key,
        server=server,
        cosine_gate=cosine_gate,
        passphrase=passphrase_source(passphrase_file),
    )
    shortfall = report.shortfall_error()
    if shortfall is not None:  # not enough bundles: the report, then one error line, exit 1
        if not json_out:
            render_aggregate(report)
        else:
            emit_json(
                "aggregate", False, {"report": report.to_dict(), "error": shortfall.to_dict()}
            )
            raise typer.Exit(int(shortfall.exit_code))
        raise shortfall
    if json_out:
        emit_json("aggregate", True, {"report": report.to_dict()})
        return
    render_aggregate(report)
    print_data(str(report.package))
