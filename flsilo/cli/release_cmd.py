"""``flsilo release sign``: a release officer signs a final package (namespace flsilo-release)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flsilo.cli.common import emit_json, info, passphrase_source, print_data, set_json
from flsilo.signing.keys import load_private_key
from flsilo.signing.release import sign_release

app = typer.Typer(
    help="Release sign-off of final packages by release officers.", no_args_is_help=True
)


@app.command("sign", no_args_is_help=True)
def release_sign(
    package: Annotated[Path, typer.Argument(help="The final package to release.")],
    key: Annotated[Path, typer.Option(help="The officer's private key.")],
    officer_id: Annotated[
        str, typer.Option("--id", help="The officer id the hub enrolled (--role release).")
    ],
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the key's passphrase from this file.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Sign PACKAGE as release officer ID: writes PACKAGE.release-ID.sig beside it.

    Example: flsilo release sign hub/packages/fed-r0005.safetensors --key keys/qa --id qa
    """
    set_json(json_out)
    private = load_private_key(key, passphrase_source(passphrase_file))
    out = sign_release(package, private, officer_id)
    if json_out:
        emit_json("release sign", True, {"package": str(package), "signature": str(out)})
        return
    info(f"signed {package.name} as release officer {officer_id}; carry the .sig with it")
    print_data(str(out))
