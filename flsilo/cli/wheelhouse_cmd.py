"""``flsilo wheelhouse build|sign|verify``: the offline install kit a site receives."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from flsilo.cli.common import emit_json, info, passphrase_source, print_data, set_json, stdout

app = typer.Typer(
    help="Build (connected machine), sign (offline hub) and verify (site) an offline install kit.",
    no_args_is_help=True,
)
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable report.")]


@app.command("build", no_args_is_help=True)
def build(
    out: Annotated[Path, typer.Argument(help="New folder for the wheels.")],
    target: Annotated[str, typer.Option(help="cpu or cuda: which torch build to collect.")] = "cpu",
    python: Annotated[
        str | None, typer.Option(help="The site's Python, e.g. 3.11 (default: this one).")
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(help="The site's wheel platform tag, e.g. manylinux_2_28_x86_64."),
    ] = None,
    find_links: Annotated[
        list[Path] | None, typer.Option(help="A folder of wheels to use (repeatable).")
    ] = None,
    index_url: Annotated[
        str | None,
        typer.Option(help="An extra package index, e.g. https://download.pytorch.org/whl/cu126."),
    ] = None,
    extras: Annotated[
        str | None, typer.Option(help="flsilo extras to include, e.g. plot,demo.")
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="flsilo checkout to package (default: this one).")
    ] = None,
    resolve_only: Annotated[
        bool,
        typer.Option("--resolve-only", help="Only say what would be collected; download nothing."),
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Collect flsilo and its pinned dependencies as hashed wheels, on a connected machine.

    Writes OUT/*.whl, OUT/requirements.txt (every wheel pinned by version and SHA-256),
    OUT/wheelhouse.json and OUT/SHA256SUMS. Carry OUT to the hub to be signed.
    Example: flsilo wheelhouse build wheels-cpu --target cpu --python 3.11
    """
    set_json(json_out)
    from hub_kit import wheelhouse as wh

    req = wh.BuildRequest(
        out=out,
        target=target,
        python=python,
        platform=platform,
        find_links=list(find_links or []),
        index_url=index_url,
        extras=[e for e in (extras or "").split(",") if e],
        source=source,
    )
    if target not in wh.TARGETS:
        from flsilo.runtime.errors import UsageError

        raise UsageError(f"unknown target {target!r}", hint="use --target cpu or --target cuda")
    if resolve_only:
        items = wh.resolve(req)
        if json_out:
            emit_json("wheelhouse build", True, {"target": target, "resolved": items})
            return
        for item in items:
            stdout().print(f"{item['name']}=={item['version']}  {item['url']}", soft_wrap=True)
        return
    info(f"collecting wheels for target {target} into {out} (pip may take a few minutes)")
    wheels = wh.build(req)
    if json_out:
        emit_json(
            "wheelhouse build",
            True,
            {"out": str(out), "target": target, "wheels": [w.__dict__ for w in wheels]},
        )
        return
    size = sum((out / w.file).stat().st_size for w in wheels)
    info(f"{len(wheels)} wheels, {size / 2**20:.0f} MiB; next, on the hub:")
    info(f"  flsilo wheelhouse sign {shlex.quote(str(out))} --key keys/hub")
    print_data(str(out))


@app.command("sign", no_args_is_help=True)
def sign(
    out: Annotated[Path, typer.Argument(help="The wheelhouse folder.")],
    key: Annotated[Path, typer.Option(help="The hub's private key.")],
    passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the key's passphrase from this file.")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Check every file against SHA256SUMS, then sign SHA256SUMS with the hub key (offline hub).

    Example: flsilo wheelhouse sign wheels-cpu --key keys/hub
    """
    set_json(json_out)
    from flsilo.signing.keys import load_private_key
    from hub_kit import wheelhouse as wh

    wh.check_sums(out)  # before the passphrase: nothing is asked for a broken folder
    sig = wh.sign(out, load_private_key(key, passphrase_source(passphrase_file)))
    if json_out:
        emit_json("wheelhouse sign", True, {"out": str(out), "signature": str(sig)})
        return
    info(
        "signed; put the folder in each site kit: flsilo hub kit HUB SITE --out KIT --wheelhouse DIR"
    )
    print_data(str(sig))


@app.command("verify", no_args_is_help=True)
def verify(
    out: Annotated[Path, typer.Argument(help="The wheelhouse folder.")],
    key: Annotated[Path, typer.Option(help="The hub's public key (hub.pub from the kit).")],
    json_out: JsonOut = False,
) -> None:
    """Check the hub's signature over SHA256SUMS and every file's SHA-256; print the install line.

    Example: flsilo wheelhouse verify kit-site-a/wheelhouse --key kit-site-a/hub.pub
    """
    set_json(json_out)
    from flsilo.signing.keys import load_public_key
    from hub_kit import wheelhouse as wh

    files = wh.verify(out, load_public_key(key))
    command = shlex.join(wh.install_command(out))
    if json_out:
        emit_json("wheelhouse verify", True, {"out": str(out), "files": files, "install": command})
        return
    info(f"{len(files)} files match the hub-signed {wh.SUMS}; install offline with:")
    stdout().print(command, soft_wrap=True)
