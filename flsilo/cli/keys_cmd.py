"""``flsilo keys new`` and ``flsilo keys fingerprint``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flsilo.cli.common import emit_json, info, new_passphrase, set_json, stdout
from flsilo.keys import generate_key, load_public_key, write_new_key

app = typer.Typer(help="Make OpenSSH Ed25519 keys and show fingerprints.", no_args_is_help=True)


@app.command("new")
def keys_new(
    path: Annotated[
        Path, typer.Argument(help="Private key file to create (PATH.pub is written too).")
    ],
    comment: Annotated[str, typer.Option(help="Comment stored in PATH.pub.")] = "",
    no_passphrase: Annotated[
        bool, typer.Option("--no-passphrase", help="Store the key unencrypted (tests, demos).")
    ] = False,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the new passphrase from this file.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Create an Ed25519 key pair: PATH (encrypted, mode 0600) and PATH.pub.

    Example: flsilo keys new keys/site-a --comment "site-a radiology"
    """
    set_json(json_out)
    passphrase = new_passphrase(no_passphrase, passphrase_file)
    public = write_new_key(path, generate_key(), passphrase, comment or path.name)
    pub_path = path.with_name(path.name + ".pub")
    if json_out:
        emit_json(
            "keys new",
            True,
            {
                "private_key": str(path),
                "public_key": str(pub_path),
                "fingerprint": public.fingerprint,
                "encrypted": passphrase is not None,
            },
        )
        return
    stdout().print(public.fingerprint)
    info(
        f"wrote {path} ({'encrypted' if passphrase else 'NOT encrypted'}, mode 0600) and "
        f"{pub_path}; read the fingerprint above to the hub administrator over the phone"
    )


@app.command("fingerprint")
def keys_fingerprint(
    pubkey: Annotated[Path, typer.Argument(help="An OpenSSH public key (.pub) file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Print the OpenSSH SHA256 fingerprint of a public key (same as ssh-keygen -lf).

    Example: flsilo keys fingerprint keys/site-a.pub
    """
    set_json(json_out)
    public = load_public_key(pubkey)
    if json_out:
        emit_json(
            "keys fingerprint",
            True,
            {
                "public_key": str(pubkey),
                "fingerprint": public.fingerprint,
                "comment": public.comment,
            },
        )
        return
    stdout().print(public.fingerprint)
