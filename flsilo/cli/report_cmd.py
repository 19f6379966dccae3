"""``flsilo report``: the model card of a package, from evidence that verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flsilo.cli.common import emit_json, info, plural, print_data, set_json


def report(
    package: Annotated[Path, typer.Argument(help="A package of this hub (its packages/ folder).")],
    hub: Annotated[Path, typer.Option(help="The hub workspace that issued it.")],
    out: Annotated[Path, typer.Option(help="New folder for card.md, card.html, card.json.")],
    hub_fingerprint: Annotated[
        str | None,
        typer.Option(help="The hub key's fingerprint, confirmed outside the workspace."),
    ] = None,
    hub_key: Annotated[
        Path | None, typer.Option(help="The hub's public key, a file you hold (not hub.pub).")
    ] = None,
    replay: Annotated[
        bool, typer.Option("--replay", help="Also recompute every aggregation (slower).")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Write the model card (card.md, card.html, card.json) of PACKAGE; refuse if any of its
    evidence does not verify (exit 3).

    The card is built from the audited log, verified packages and the sites' signed
    evaluation reports only. Like audit, it needs the hub key from outside the workspace.
    Example: flsilo report hub/packages/xray-r0010.safetensors --hub hub --out card
    --hub-fingerprint SHA256:NxPKs2...
    """
    set_json(json_out)
    from hub_kit.card import write_card

    card = write_card(package, hub, out, hub_fingerprint, hub_key, replay=replay)
    doc = card.doc
    if json_out:
        emit_json("report", True, {"out": str(out), "card": doc})
        return
    info(
        f"model card of {package.name}: "
        f"{plural(len(doc['evaluations']), 'signed evaluation report')}, "
        f"{plural(len(doc['lineage']), 'package')}, audit passed"
        + ("" if card.plots else " (no plots: install the plot extra)")
    )
    print_data(str(out / "card.html"))
