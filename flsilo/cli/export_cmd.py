"""``flsilo export``: a verified package as a deployable model file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flsilo.cli.common import emit_json, info, print_data, set_json
from flsilo.cli.trust_options import Hub, Key, Signers, Site, chosen_trust
from flsilo.format.manifest import to_jsonable
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError


def export(
    package: Annotated[Path, typer.Argument(help="The package to export.")],
    out: Annotated[Path, typer.Option(help="The model file to write (e.g. model.onnx).")],
    format: Annotated[str, typer.Option("--format", help="onnx.")] = "onnx",
    site: Site = None,
    hub: Hub = None,
    signers: Signers = None,
    key: Key = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Verify a package and export its model (ONNX), checked against torch before it is written.

    The file's metadata names the package's sha256 and the preprocessing the model expects.
    Example: flsilo export site/packages/xray-r0010.safetensors --site site --out xray.onnx
    """
    set_json(json_out)
    from site_kit.export import FORMATS, export_onnx

    if format not in FORMATS:
        raise UsageError(
            f"--format {format!r} is not known",
            code=Code.USAGE,
            hint=f"use one of {', '.join(FORMATS)}",
        )
    done = export_onnx(package, chosen_trust(site, hub, signers, key), out)
    if json_out:
        emit_json("export", True, to_jsonable(done) | {"path": str(done.path)})
        return
    info(
        f"{package.name} exported: largest logit difference from torch {done.max_abs_diff:.1e} "
        f"on {done.samples} sample inputs; preprocessing from "
        f"{done.preprocess_from or 'nowhere (not in the package or beside it)'}"
    )
    print_data(str(done.path))
