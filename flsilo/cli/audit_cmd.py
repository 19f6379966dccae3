"""``flsilo audit``: the whole chain of rounds, checked offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from flsilo.cli.common import emit_json, plural, set_json, stdout
from flsilo.cli.progress import with_progress
from flsilo.format.manifest import to_jsonable
from flsilo.runtime import progress
from flsilo.runtime.errors import ExitCode


@with_progress("audit")
def audit(
    hub_dir: Annotated[Path, typer.Argument(help="Hub workspace (or a copy of it).")],
    hub_fingerprint: Annotated[
        str | None,
        typer.Option(
            "--hub-fingerprint",
            help="The hub key's fingerprint as the hub administrator read it to you (SHA256:...): "
            "the init key or any key the log rotated to. This or --hub-key is required.",
        ),
    ] = None,
    hub_key: Annotated[
        Path | None,
        typer.Option(
            "--hub-key",
            help="A copy of the hub's public key you hold (not the workspace's hub.pub).",
        ),
    ] = None,
    replay: Annotated[
        bool, typer.Option("--replay", help="Recompute every aggregation and compare.")
    ] = False,
    against: Annotated[
        list[Path] | None,
        typer.Option(
            "--against",
            help="A package kept by a site or auditor: prove the log holds its history "
            "unchanged (repeatable).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Verify log chain and signature, packages, bundles, provenance; exit 3 on any failure.

    The trust root comes from outside the workspace: the hub key's fingerprint, confirmed
    with the hub administrator, or a copy of the key. Everything the workspace says about
    keys (hub.pub, hub.toml, the log's init and rotate-key events, allowed_signers) is
    checked against it.

    Example: flsilo audit hub --hub-fingerprint SHA256:NxPKs2aiYRtynUVR76dZithwd5dJfb9Lb2W93/2LMnQ
    --replay --against site-a/packages/fed-r0003.safetensors
    """
    set_json(json_out)
    from hub_kit.audit import audit as run_audit
    from hub_kit.audit_trust import trust_root

    root = trust_root(hub_fingerprint, hub_key)
    with progress.stage("checking", unit="files", total_bytes=0):  # audit sizes it
        report = run_audit(hub_dir, root, replay=replay, against=tuple(against or ()))
    code = int(ExitCode.OK if report.ok else ExitCode.VERIFICATION_FAILED)
    if json_out:
        emit_json("audit", report.ok, {"audit": to_jsonable(report), "exit_code": code})
    else:
        # No outer box and a narrow check column: a whole fingerprint (50) fits in 80 columns.
        table = Table(
            title=f"flsilo audit {hub_dir} ({plural(report.rounds, 'round')} aggregated, trusting "
            f"{root.fingerprint})",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("", no_wrap=True)
        table.add_column("check", max_width=20)
        table.add_column("detail", overflow="fold")
        for c in report.checks:
            table.add_row("[green]OK[/]" if c.ok else "[red]FAIL[/]", c.name, c.detail)
        stdout().print(table)
        stdout().print("[green]audit passed[/]" if report.ok else "[red]audit FAILED[/]")
    raise typer.Exit(code)
