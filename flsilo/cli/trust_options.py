"""The trust a command that reads one package or bundle uses: a site's, a hub's, or a file.

``evaluate`` and ``export`` verify their input before loading it and take their trust the
same way: ``--site`` (the hub key of a site workspace), ``--hub`` (the hub keys and enrolled
sites of a hub workspace, its log and allowed_signers checked first), ``--signers`` (an
allowed_signers file) or ``--key`` (one public key). Exactly one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError

Site = Annotated[Path | None, typer.Option(help="Trust the hub key of this site workspace.")]
Hub = Annotated[
    Path | None, typer.Option(help="Trust the hub keys and enrolled sites of this hub workspace.")
]
Signers = Annotated[Path | None, typer.Option(help="Trust this allowed_signers file.")]
Key = Annotated[Path | None, typer.Option(help="Trust only this public key.")]


def chosen_trust(
    site: Path | None, hub: Path | None, signers: Path | None, key: Path | None
) -> Any:
    """The one trust policy the options name; a usage error for none or several."""
    if sum(x is not None for x in (site, hub, signers, key)) > 1:
        raise UsageError(
            "give one of --site, --hub, --signers or --key",
            code=Code.TRUST_REQUIRED,
            hint="--site at a site, --hub at the hub, --signers or --key anywhere else",
        )
    if site is not None:
        from site_kit.workspace import SiteWorkspace

        return SiteWorkspace.open(site).trust()
    if hub is not None:
        from hub_kit.workspace import HubWorkspace

        ws = HubWorkspace.open(hub)
        return ws.trust(ws.state())  # the log's signature and allowed_signers checked first
    from flsilo.cli.verify_cmd import load_trust

    return load_trust(signers, key)
