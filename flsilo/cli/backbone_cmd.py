"""``flsilo backbone import``: a published checkpoint to a start file, on a connected machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flsilo.cli.common import emit_json, info, print_data, set_json
from flsilo.cli.options import _checked, int_list, name_list

app = typer.Typer(
    help="Bring a published backbone in (run on a connected machine).", no_args_is_help=True
)


@app.command("import", no_args_is_help=True)
def import_(
    checkpoint: Annotated[
        Path,
        typer.Argument(help="The publisher's .safetensors file (or a weights-only .pth)."),
    ],
    model: Annotated[str, typer.Option(help="The federation's spec, e.g. torchvision:resnet18.")],
    out: Annotated[Path, typer.Option(help="The start file to write (START.safetensors).")],
    classes: Annotated[str, typer.Option(help="The federation's classes: A,B,C.")],
    input_shape: Annotated[str, typer.Option(help="The federation's C,H,W.")] = "3,224,224",
    normalize: Annotated[
        str | None,
        typer.Option(help="M1,M2,M3/S1,S2,S3 or imagenet, when the library declares none."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Map a published checkpoint onto the spec's model (its classifier replaced by one for
    the federation's classes), check every tensor, and write START.safetensors with its
    provenance record (also START.provenance.json). Give the file to hub init --init-weights.

    Example: flsilo backbone import resnet18.safetensors --model torchvision:resnet18
    --classes normal,pneumonia --out start.safetensors
    """
    set_json(json_out)
    from flsilo.models.backbone import IMAGENET, import_backbone, write_start
    from flsilo.plans.preprocessing import parse_normalize

    given = None
    if normalize is not None:
        parsed = parse_normalize(_checked("--normalize", parse_normalize, normalize))
        given = IMAGENET if parsed == "imagenet" else parsed if isinstance(parsed, tuple) else None
    shape = int_list(input_shape, "--input-shape")
    imported = import_backbone(checkpoint, model, shape, len(name_list(classes)), given)
    record = write_start(out, imported)
    if json_out:
        emit_json("backbone import", True, {"start": str(out), "provenance": imported.provenance})
        return
    dropped = ", ".join(imported.provenance["dropped"]) or "none"
    info(f"mapped {len(imported.state)} tensors of {model}; dropped the old classifier ({dropped})")
    info(f"provenance: {record}")
    print_data(str(out))
