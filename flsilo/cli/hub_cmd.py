"""``flsilo hub init|enroll|revoke|kit|status`` and ``flsilo aggregate``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from flsilo.cli.common import (
    emit_json,
    info,
    passphrase_source,
    print_data,
    say,
    set_json,
    stdout,
)
from flsilo.cli.hub_init_cmd import JsonOut, PassphraseFile, hub_init
from flsilo.cli.options import STRATEGY_HELP
from flsilo.cli.progress import with_progress
from flsilo.format.manifest import to_jsonable

app = typer.Typer(
    help="Run the hub: create a federation, enrol sites, make kits.", no_args_is_help=True
)
app.command("init", no_args_is_help=True)(hub_init)  # first in --help, as ever

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
    from flsilo.format.artifact import sig_path
    from flsilo.signing.rotation import chain_path

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
        from hub_kit.roundprep import RoundOverrides

        show_inbox_report(
            hub_dir, RoundOverrides(inbox=inbox), json_out=json_out, command="hub status"
        )
        return
    from hub_kit.status import status

    st = status(hub_dir)
    if json_out:
        emit_json("hub status", True, to_jsonable(st))
        return
    out = stdout()
    standing = st.finality
    out.print(
        f"federation [bold]{st.federation}[/] — round {st.round} of {st.rounds} ({st.schedule})"
        + (
            (" — [green]complete[/]" if standing["final"] else " — complete, [yellow]not final[/]")
            if st.final
            else ""
        )
    )
    if standing["required"]:
        out.print(standing["text"])
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
            "revoked " + s["revoked_at"]
            if s["revoked_at"]
            else ("active" if s["role"] == "site" else "officer"),
            "yes" if s["bundle_present"] else "-",
            *([spent_text(s["dp_epsilon_spent"], st.dp_budget)] if dp else []),
        )
    out.print(table)
    if st.missing:
        out.print(f"missing bundles for round {st.round}: {', '.join(st.missing)}")
    for note in st.unrecorded:
        out.print(f"[yellow]not in the event log:[/] {note}")


@with_progress("aggregate")
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
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="The hub's own labelled test set: score the new package on it and record the "
            "figures, signed, in the package and the log (never the records).",
        ),
    ] = None,
    eval_format: Annotated[
        str | None,
        typer.Option(help="Format of the --eval data (imagefolder, images-csv, csv, npz, ...)."),
    ] = None,
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
    --dry-run checks the inbox with the same gates and changes nothing. --eval DATA scores
    the new package on the hub's test set; the figures are claims signed by the hub.

    Example: flsilo aggregate hub --inbox /media/usb/bundles --server-optimizer fedavgm
    """
    set_json(json_out)
    from flsilo.cli.options import parse_betas, parse_server_optimizer
    from hub_kit.roundprep import RoundOverrides

    overrides = RoundOverrides(
        inbox=inbox,
        strategy=strategy,
        min_sites=min_sites,
        norm_gate=norm_gate,
        max_weight_share=max_weight_share,
        cosine_gate=cosine_gate,
        server_optimizer=parse_server_optimizer(server_optimizer) if server_optimizer else None,
        server_lr=server_lr,
        server_momentum=server_momentum,
        server_betas=parse_betas(server_betas),
        server_tau=server_tau,
    )
    evaluator = None
    if eval_data is not None:
        from sim_kit.hubeval import HubTestSet

        evaluator = HubTestSet(eval_data, eval_format)
    if dry_run:
        from flsilo.cli.dryrun_cmd import show_inbox_report

        show_inbox_report(
            hub_dir, overrides, json_out=json_out, command="aggregate", evaluator=evaluator
        )
        return
    from flsilo.cli.round_report import render_aggregate
    from hub_kit.aggregate import aggregate_round, finish_interrupted

    finished = finish_interrupted(hub_dir)
    if finished is not None:  # rerun after an interrupt: the committed round is done
        if json_out:
            emit_json("aggregate", True, finished.to_dict())
        else:
            info(finished.line())
            print_data(str(finished.package))
        return
    report = aggregate_round(
        hub_dir,
        overrides,
        key=key,
        passphrase=passphrase_source(passphrase_file),
        evaluator=evaluator,
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
