"""Intake's descriptor I/O: open each inbox entry once, verify it while copying, then ask
the gates (:mod:`hub_kit.verdicts`, pure) for a verdict on what was read.

An inbox entry must be a regular file: a symlink, FIFO, device or folder named
``*.safetensors`` is refused by name without being opened for reading. A bundle and its
``.sig`` are opened once (``O_NOFOLLOW | O_NONBLOCK``), checked on the descriptor (regular
file, a size the round can ask for) and read once through the hash, the checks and a copy
into the round's staging folder. So what is aggregated and archived is byte for byte what
verified, the archived ``.sig`` is the exact bytes that verified, and a rejected file's
sha256 and quarantine copy come from that same single read. Inbox files are never modified
or removed. With ``staging=None`` nothing at all is written: a dry run. Every decision
about what was read (policy, revocation, sizes, duplicates) is made in
:mod:`hub_kit.verdicts`; this module only reads, copies, stages and quarantines.
"""

from __future__ import annotations

import io
import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from flsilo.format import manifest as mf
from flsilo.format.artifact import (
    Verified,
    read_signature_bytes,
    require_kind,
    sig_path,
    verify_stream,
)
from flsilo.format.readpass import ArtifactReader
from flsilo.format.tensorfile import Header
from flsilo.fs.atomic import BackgroundSync, atomic_writer, write_bytes, write_text
from flsilo.fs.untrusted import UnreadableError, describe_mode, not_regular, open_regular
from flsilo.plans.federation import FederationConfig
from flsilo.runtime import progress
from flsilo.runtime.errors import FlsiloError
from flsilo.signing.trust import AllowedSigners
from hub_kit.inboxnames import name_too_long, stored_name
from hub_kit.state import HubState
from hub_kit.verdicts import (
    Candidate,
    IntakeResult,
    Rejection,
    RoundGate,
    Skipped,
    check_policy,
    check_revocation,
    claimed_site,
    resolve_duplicates,
    size_error,
)

INTAKE_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Bundles examined at once."""


def inbox_entries(inbox: Path) -> list[os.DirEntry[str]]:
    """``*.safetensors`` entries of the inbox, sorted by name (not followed, not opened)."""
    with os.scandir(inbox) as it:
        return sorted((e for e in it if e.name.endswith(".safetensors")), key=lambda e: e.name)


def _size(entry: os.DirEntry[str]) -> int:
    """What reading this entry would read, for progress: a regular file's size, else 0."""
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def intake(
    inbox: Path,
    staging: Path | None,
    config: FederationConfig,
    state: HubState,
    trust: AllowedSigners,
    package_header: Header,
    package_model: mf.ModelInfo,
    package_plan: mf.Plan,
    *,
    at: int | None = None,
    sync: BackgroundSync | None = None,
) -> IntakeResult:
    """Examine every inbox entry; stage accepted copies (and reject copies) under ``staging``.

    With ``sync`` the copies reach the disk in the background: the caller joins it before
    anything that depends on them (the commit).
    """
    gate = RoundGate(config, state, trust, package_header, package_model, package_plan)
    when = int(time.time()) if at is None else at
    result = IntakeResult([], [], [])
    if staging is not None:
        (staging / "rejected").mkdir(parents=True, exist_ok=True)

    def one(entry: os.DirEntry[str]) -> Candidate | Rejection | Skipped:
        with progress.unit(_size(entry)):
            return examine(Path(entry.path), entry, staging, gate, when, sync)

    # several bundles at once (each already hashes and copies on two threads); the
    # outcomes come back in inbox order, so nothing downstream sees the interleaving
    entries = inbox_entries(inbox)
    total = sum(_size(e) for e in entries)
    with (
        progress.stage("verifying", unit="bundles", units=len(entries), total_bytes=total),
        ThreadPoolExecutor(INTAKE_WORKERS, thread_name_prefix="flsilo-intake") as pool,
    ):
        outcomes = list(pool.map(one, entries))
    for outcome in outcomes:
        if isinstance(outcome, Candidate):
            result.candidates.append(outcome)
        elif isinstance(outcome, Skipped):
            result.skipped.append(outcome)
        else:
            result.rejections.append(outcome)
    resolved, drop = resolve_duplicates(result)
    for path in drop:
        path.unlink(missing_ok=True)
    return resolved


def examine(
    path: Path,
    entry: os.DirEntry[str] | None,
    staging: Path | None,
    gate: RoundGate,
    at: int,
    sync: BackgroundSync | None = None,
) -> Candidate | Rejection | Skipped:
    """One inbox entry through every gate; reads it at most once and never by path twice.

    The entry is verified while it is copied into staging; the hub's policy then judges
    the copy (never the inbox file), which becomes the archived bundle or the quarantine
    copy.
    """
    if (too_long := name_too_long(path)) is not None:  # cannot be staged or archived
        return Rejection(path, "?", "", too_long)
    site = claimed_site(path)
    mode = (entry.stat(follow_symlinks=False) if entry else os.lstat(path)).st_mode
    if not stat.S_ISREG(mode):
        return Rejection(path, site, "", not_regular(path, describe_mode(mode)))
    try:
        sig_bytes: bytes | None = read_signature_bytes(path)
        sig_error: FlsiloError | None = None
    except FlsiloError as err:
        sig_bytes, sig_error = None, err
    low, high = gate.size_bounds()
    try:
        opened = open_regular(path, max_size=high, min_size=low)
    except FlsiloError as err:
        return Rejection(path, site, "", size_error(err, low, high), None, sig_bytes)
    copy = staging / "rejected" / path.name if staging is not None else None
    with opened.fh:
        if copy is None:
            outcome = _read(
                path, opened.fh, opened.size, None, None, sig_bytes, sig_error, gate, at
            )
        else:
            with atomic_writer(copy, mode=0o600, sync=sync) as out:
                outcome = _read(
                    path, opened.fh, opened.size, out, copy, sig_bytes, sig_error, gate, at
                )
    if not isinstance(outcome, Verified):
        if isinstance(outcome, Skipped) and copy is not None:
            copy.unlink(missing_ok=True)
        return outcome
    judged = replace(outcome, scan=replace(outcome.scan, path=copy)) if copy else outcome
    try:
        check_revocation(judged, gate.state)
        age = check_policy(judged, gate, read_tensors(judged, gate.tensors_to_read()))
    except FlsiloError as err:
        return Rejection(path, site, outcome.sha256, _named(err, path), copy, sig_bytes)
    except OSError as exc:
        unreadable = UnreadableError(f"cannot read the file ({exc.strerror})", path=path)
        return Rejection(path, site, outcome.sha256, unreadable, copy, sig_bytes)
    weight = gate.weight(outcome, age)
    if copy is None:
        return Candidate(path, None, outcome, age, weight)
    staged = copy.parent.parent / "archive" / path.name
    staged.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(copy, 0o644)
    os.replace(copy, staged)
    if sync is not None:
        sync.folder(staged.parent)
    write_bytes(sig_path(staged), outcome.signature_bytes, sync=sync)
    verified = replace(outcome, scan=replace(outcome.scan, path=staged))
    return Candidate(path, staged, verified, age, weight)


def read_tensors(verified: Verified, names: tuple[str, ...]) -> dict[str, bytes]:
    """The stored bytes of the tensors ``names`` (those the bundle has) from the verified
    file: the staged copy, or in a dry run the inbox file just verified."""
    wanted = [t for t in verified.scan.header.tensors if t.name in names]
    if not wanted:
        return {}
    start = verified.scan.header.data_start  # a file swapped since (a FIFO, a link, shorter)
    opened = open_regular(verified.path, min_size=start + max(t.end for t in wanted))
    found = {}
    with opened.fh as fh:
        for info in wanted:
            fh.seek(start + info.begin)
            found[info.name] = fh.read(info.nbytes)
    return found


def _named(err: FlsiloError, path: Path) -> FlsiloError:
    """A policy error about the staged copy, said about the inbox file the operator sees."""
    err.path = str(path)
    return err


def _read(
    path: Path,
    fh: io.BufferedIOBase,
    size: int,
    out: BinaryIO | None,
    copy: Path | None,
    sig_bytes: bytes | None,
    sig_error: FlsiloError | None,
    gate: RoundGate,
    at: int,
) -> Verified | Rejection | Skipped:
    """Verification proper (signature, signer, structure), in the single read."""
    reader = ArtifactReader(fh, size, copy_to=out, data_digest=False)  # bundles: file digest only
    state = gate.state
    try:
        if sig_error is not None:
            raise sig_error
        assert sig_bytes is not None
        verified = require_kind(
            verify_stream(reader, sig_bytes, gate.trust, at=at, source=path), mf.KIND_BUNDLE
        )
    except FlsiloError as err:
        sha = _finish(reader)
        if sha and sha in state.accepted:
            why = f"already aggregated in round {state.accepted[sha]}"
            return Skipped(path, sha, why, claimed_site(path))
        return Rejection(path, claimed_site(path), sha, err, copy if sha else None, sig_bytes)
    except OSError as exc:
        unreadable = UnreadableError(f"cannot read the file ({exc.strerror})", path=path)
        return Rejection(path, claimed_site(path), "", unreadable, None, sig_bytes)
    if verified.sha256 in state.accepted:
        why = f"already aggregated in round {state.accepted[verified.sha256]}"
        site = verified.manifest.bundle.site if verified.manifest.bundle else claimed_site(path)
        return Skipped(path, verified.sha256, why, site)
    return verified


def _finish(reader: ArtifactReader) -> str:
    """Read the rest of a refused file through the same descriptor; its sha256 or ''."""
    try:
        reader.drain()
    except OSError:
        return ""
    return reader.sha256


def quarantine(rejection: Rejection, directory: Path, round_: int) -> Path:
    """Keep what was read of a rejected entry aside, mode 0600, with a reason file.

    The copy is the one made while the entry was read (never a second read of the inbox);
    an entry that was not read (a symlink, a FIFO, an implausible size, an unreadable file)
    gets only the reason file. The original stays put.
    """
    kept = stored_name(rejection.inbox_path.name)  # a long name is stored shortened
    stem = f"{rejection.sha256[:12] or 'unread'}-{kept}"
    target = directory / f"r{round_:04d}" / stem
    target.parent.mkdir(parents=True, exist_ok=True)
    copied = False
    if rejection.copy is not None and rejection.copy.exists():
        os.chmod(rejection.copy, 0o600)
        os.replace(rejection.copy, target)
        copied = True
    if rejection.sig_bytes is not None:
        write_bytes(sig_path(target), rejection.sig_bytes, mode=0o600)
    reason = {
        "round": round_,
        "file": rejection.inbox_path.name,
        "site": rejection.site,
        "sha256": rejection.sha256,
        "copied": copied or target.exists(),
        **({"stored_as": stem} if kept != rejection.inbox_path.name else {}),
        **rejection.error.to_dict(),
        "time": mf.now_utc(),
    }
    write_text(
        target.with_name(target.name + ".reason.txt"), json.dumps(reason, indent=2) + "\n", 0o600
    )
    return target
