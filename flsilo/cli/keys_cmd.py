"""``flsilo keys new`` and ``flsilo keys fingerprint``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flsilo.cli.common import emit_json, info, new_passphrase, print_data, set_json
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.signing.keys import TYPE_NAMES, generate_key, load_public_key, write_new_key

app = typer.Typer(
    help="Make OpenSSH keys (Ed25519, ECDSA P-256) and show fingerprints.", no_args_is_help=True
)


@app.command("new")
def keys_new(
    path: Annotated[
        Path, typer.Argument(help="Private key file to create (PATH.pub is written too).")
    ],
    comment: Annotated[str, typer.Option(help="Comment stored in PATH.pub.")] = "",
    key_type: Annotated[
        str,
        typer.Option(
            "--type",
            help="ed25519 (default) or ecdsa-p256 (a FIPS-approved curve; a P-256 hub key "
            "also writes OpenSSF model signing bundles).",
        ),
    ] = "ed25519",
    no_passphrase: Annotated[
        bool, typer.Option("--no-passphrase", help="Store the key unencrypted (tests, demos).")
    ] = False,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the new passphrase from this file.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Create a key pair: PATH (encrypted, mode 0600) and PATH.pub (Ed25519 unless --type).

    Example: flsilo keys new keys/site-a --comment "site-a radiology"
    """
    set_json(json_out)
    if key_type not in TYPE_NAMES:
        raise UsageError(
            f"unknown key type {key_type!r}",
            code=Code.BAD_KEY_TYPE,
            hint="use --type ed25519 (default) or --type ecdsa-p256",
        )
    passphrase = new_passphrase(no_passphrase, passphrase_file)
    public = write_new_key(path, generate_key(key_type), passphrase, comment or path.name)
    pub_path = path.with_name(path.name + ".pub")
    if json_out:
        emit_json(
            "keys new",
            True,
            {
                "private_key": str(path),
                "public_key": str(pub_path),
                "fingerprint": public.fingerprint,
                "type": public.key_type,
                "encrypted": passphrase is not None,
            },
        )
        return
    print_data(public.fingerprint)
    info(
        f"wrote {path} ({'encrypted' if passphrase else 'NOT encrypted'}, mode 0600) and "
        f"{pub_path}; read the fingerprint above by phone to whoever must trust this key "
        "(a site's or officer's key: the hub administrator; the hub's key: every site)"
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
    print_data(public.fingerprint)
