"""``flsilo evaluate``'s report for a detection model: mAP and AP@0.5 per class."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from flsilo.signing.claims import show_figure, show_metric


def print_detection(out: Console, name: str, scored: Any) -> None:
    """mAP@0.5, mAP@0.5:0.95 (as every report shows them: ``mAP@0.5 0.912``), the exact-image
    share and loss; then AP@0.5 per class."""
    result = scored.result
    values = result.values
    out.print(
        f"{name}: [bold]{show_metric('map50', values['map50'])}[/], "
        f"{show_metric('map', values['map'])}, images exactly right {100 * result.accuracy:.1f}%, "
        f"loss {result.loss:.4f} on {result.samples} images ({scored.skipped} skipped)"
    )
    table = Table(title="per class")
    for col in ("class", "objects", "AP@0.5"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for cls, row in scored.figures["per_class"].items():
        ap = row["ap50"]
        table.add_row(cls, str(row["objects"]), show_figure("map50", ap))
    out.print(table)
