"""``flsilo report``: the model card of a package, from evidence that verifies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flsilo.cli.common import emit_json, info, print_data, set_json
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError


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
    from flsilo.fs.atomic import atomic_directory
    from hub_kit import card_render
    from hub_kit.audit_trust import trust_root
    from hub_kit.card import card_evidence

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            "the output folder exists and is not empty",
            path=out,
            code=Code.EXISTS,
            hint="give a new folder for the card (a card is never written over another)",
        )
    root = trust_root(hub_fingerprint, hub_key)
    evidence = card_evidence(package, hub, root, replay=replay)
    doc = evidence.doc
    plots = card_render.plots(doc)
    with atomic_directory(out) as staging:
        (staging / "card.json").write_text(
            json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        (staging / "card.md").write_text(card_render.markdown(doc, plots), encoding="utf-8")
        (staging / "card.html").write_text(card_render.page(doc, plots), encoding="utf-8")
        for name, png in plots.items():
            (staging / f"{name}.png").write_bytes(png)
    if json_out:
        emit_json("report", True, {"out": str(out), "card": doc})
        return
    info(
        f"model card of {package.name}: {len(doc['evaluations'])} signed evaluation reports, "
        f"{len(doc['lineage'])} packages, audit passed"
        + ("" if plots else " (no plots: install the plot extra)")
    )
    print_data(str(out / "card.html"))
