"""``flsilo verify``: the auditor's check of signatures, signers and structure (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flsilo.cli.common import (
    FINAL_UNKNOWN,
    emit_json,
    exit_code_for,
    parse_when,
    print_error,
    set_json,
    short_digest,
    short_fingerprint,
    stdout,
)
from flsilo.cli.progress import with_progress
from flsilo.format.artifact import Verified, verify_file
from flsilo.format.manifest import Manifest
from flsilo.fs.untrusted import MAX_SMALL_FILE_BYTES, read_bounded
from flsilo.runtime import progress
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, MalformedInputError, UsageError
from flsilo.signing import oms
from flsilo.signing.keys import load_public_key
from flsilo.signing.release import check_release
from flsilo.signing.trust import AllowedSigners, SingleKey, TrustPolicy


def manifest_summary(m: Manifest) -> dict[str, Any]:
    return {
        "kind": m.kind,
        "federation": m.federation,
        "round": m.round,
        "site": m.bundle.site if m.bundle else None,
        "samples": m.bundle.num_samples if m.bundle else None,
        "final": m.package.final if m.package else None,
        "created_at": m.created_at,
    }


def artifact_paths(files: list[Path]) -> list[Path]:
    """Accept FILE or FILE.sig (as a shell glob gives both); keep order, drop repeats."""
    out: dict[Path, None] = {}
    for f in files:
        out[f.with_name(f.name[: -len(".sig")]) if f.name.lower().endswith(".sig") else f] = None
    return list(out)


def load_trust(signers: Path | None, key: Path | None) -> TrustPolicy:
    if (signers is None) == (key is None):
        raise UsageError(
            "give exactly one of --signers ALLOWED_SIGNERS or --key PUBKEY",
            code=Code.TRUST_REQUIRED,
            hint="the hub's allowed_signers file trusts every enrolled site and the hub itself",
        )
    if signers is not None:
        return AllowedSigners.load(signers)
    assert key is not None
    return SingleKey(load_public_key(key), str(key))


def check_oms_bundle(verified: Verified) -> bool:
    """Check ``FILE.sigstore.json`` when it sits beside a package; True when there was one."""
    path = oms.bundle_path(verified.path)
    try:
        data = read_bounded(path, MAX_SMALL_FILE_BYTES)
    except MalformedInputError as exc:
        if exc.code == Code.MISSING:
            return False
        raise
    oms.verify_bundle(
        data, verified.signature.public_key, verified.path.name, verified.sha256, source=str(path)
    )
    return True


@with_progress("verify")
def verify(
    files: Annotated[
        list[Path], typer.Argument(help="Artifacts to verify (FILE.sig must sit beside each).")
    ],
    signers: Annotated[
        Path | None, typer.Option("--signers", help="OpenSSH allowed_signers file to trust.")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Trust only this public key.")] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="Judge key validity at this time (YYYYMMDD[HHMM[SS]][Z]), e.g. when "
            "the hub accepted a bundle; default now."
        ),
    ] = None,
    require_release: Annotated[
        int,
        typer.Option(
            help="Also require at least M valid release officers' signatures "
            "(PACKAGE.release-OFFICER.sig), and never fewer than the package itself demands."
        ),
    ] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Verify signature, signer, namespace and structure of each FILE. Exit 0 only if all pass.

    Example: flsilo verify hub/rounds/0001/*.safetensors --signers hub/allowed_signers
    """
    set_json(json_out)
    trust = load_trust(signers, key)
    when = parse_when(at)
    rows: list[dict[str, Any]] = []
    errors: list[FlsiloError] = []
    paths = artifact_paths(files)
    with progress.stage(
        "verifying", unit="files", units=len(paths), total_bytes=sum(map(_size, paths))
    ):
        for path in paths:
            rows.append(_check(path, trust, when, require_release, errors, json_out))
    code = exit_code_for(errors)
    if json_out:
        emit_json("verify", not errors, {"files": rows, "exit_code": code})
    else:
        render(rows)
    raise typer.Exit(code)


def _size(path: Path) -> int:
    """What verifying ``path`` reads, for progress (0 for what cannot be a file)."""
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0


def _check(
    path: Path,
    trust: TrustPolicy,
    when: int | None,
    require_release: int,
    errors: list[FlsiloError],
    json_out: bool,
) -> dict[str, Any]:
    """One file's row; a failure is also added to ``errors`` (and said, without --json)."""
    try:
        verified = verify_file(path, trust, at=when, data_digest=False)
        model_signing = check_oms_bundle(verified)
        released = (
            check_release(verified, require_release, trust, when) if require_release else None
        )
    except FlsiloError as err:
        errors.append(err)
        if not json_out:
            print_error(err)
        return {"file": str(path), "ok": False, "error": err.to_dict()}
    return {
        "file": str(path),
        "ok": True,
        "signer": verified.signer.principals,
        "fingerprint": verified.signature.fingerprint,
        "sha256": verified.sha256,
        "model_signing_bundle": model_signing,
        "release_signed_by": list(released.signed) if released else None,
        "release_not_counted": (
            [{"officer": o, "reason": why} for o, why in released.not_counted] if released else None
        ),
        **manifest_summary(verified.manifest),
    }


def _details(r: dict[str, Any]) -> str:
    """What the file is, who signed it, its digest: stacked, so the table fits 80 columns."""
    last = " (the schedule's last)" if r["final"] else ""
    what = f"{r['kind']}{last}, round {r['round']}"
    if r["site"]:
        what += f", {r['site']}, {r['samples']} samples"
    signer = r["signer"] if isinstance(r["signer"], str) else ",".join(r["signer"])
    lines = [
        what,
        *([FINAL_UNKNOWN] if r["final"] else []),
        f"signed by {signer} {short_fingerprint(r['fingerprint'])}",
        f"sha256 {short_digest(r['sha256'])}",
    ]
    if r["release_signed_by"]:
        lines.append("released by " + ", ".join(r["release_signed_by"]))
    for uncounted in r["release_not_counted"] or []:
        lines.append(f"not counted: {uncounted['officer']} ({uncounted['reason']})")
    return "\n".join(lines)


def render(rows: list[dict[str, Any]]) -> None:
    """One row per file; the name is never folded (whole fingerprints and digests: --json)."""
    table = Table(title="flsilo verify")
    table.add_column("file", no_wrap=True)
    table.add_column("verdict")
    table.add_column("details")
    for r in rows:
        if r["ok"]:
            table.add_row(escape(Path(r["file"]).name), "[green]OK[/]", _details(r))
        else:
            table.add_row(escape(Path(r["file"]).name), "[red]FAIL[/]", r["error"]["code"])
    stdout().print(table)
