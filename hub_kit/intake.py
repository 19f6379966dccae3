"""Intake gates: open each inbox entry once, verify it while copying, then apply hub policy.

An inbox entry must be a regular file: a symlink, FIFO, device or folder named
``*.safetensors`` is refused by name without being opened for reading. A bundle and its
``.sig`` are opened once (``O_NOFOLLOW | O_NONBLOCK``), checked on the descriptor (regular
file, a size the round can ask for) and read once through the hash, the checks and a copy
into the round's staging folder. So what is aggregated and archived is byte for byte what
verified, the archived ``.sig`` is the exact bytes that verified, and a rejected file's
sha256 and quarantine copy come from that same single read. Inbox files are never modified
or removed. With ``staging=None`` nothing at all is written: a dry run.
"""

from __future__ import annotations

import io
import json
import os
import stat
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from flsilo import manifest as mf
from flsilo.artifact import (
    ArtifactReader,
    Verified,
    read_signature_bytes,
    require_kind,
    sig_path,
    verify_stream,
)
from flsilo.atomic import BackgroundSync, atomic_writer, write_bytes, write_text
from flsilo.codes import Code
from flsilo.errors import FlsiloError, MalformedInputError, PolicyError, VerificationError
from flsilo.federation import FederationConfig
from flsilo.preprocessing import stats_width
from flsilo.tensorfile import FLOAT_DTYPES, MAX_HEADER_BYTES, Header
from flsilo.tensorsets import (
    ROUND_FEDSTATS,
    ROUND_STATISTICS,
    ROUND_TRAIN,
    STAT_CLASS_COUNTS,
    expected_specs,
    layout_of,
)
from flsilo.trust import AllowedSigners
from flsilo.untrusted import UnreadableError, describe_mode, not_regular, open_regular
from hub_kit.fedstats import check_fedstats
from hub_kit.inboxnames import name_too_long, stored_name
from hub_kit.privacy import check_bundle as check_dp_bundle
from hub_kit.streaming import FISHER_PREFIX
from hub_kit.workspace import HubState

INTAKE_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Bundles examined at once."""
HEADER_SLACK_BYTES = 1 << 20
"""How much larger a bundle's header may be than its package's (its own manifest)."""


@dataclass(frozen=True)
class Candidate:
    """A verified bundle that passed every gate, staged inside the hub workspace."""

    inbox_path: Path
    staged: Path | None
    verified: Verified
    age: int
    weight: float

    @property
    def site(self) -> str:
        assert self.verified.manifest.bundle is not None
        return self.verified.manifest.bundle.site

    @property
    def samples(self) -> int:
        assert self.verified.manifest.bundle is not None
        return self.verified.manifest.bundle.num_samples


@dataclass(frozen=True)
class Rejection:
    """A refused inbox entry; ``copy`` and ``sig_bytes`` are what was read of it, if anything."""

    inbox_path: Path
    site: str
    sha256: str
    error: FlsiloError
    copy: Path | None = None
    sig_bytes: bytes | None = None


@dataclass(frozen=True)
class Skipped:
    inbox_path: Path
    sha256: str
    why: str


@dataclass
class IntakeResult:
    candidates: list[Candidate]
    rejections: list[Rejection]
    skipped: list[Skipped]


@dataclass(frozen=True)
class RoundGate:
    """What the hub expects of a bundle this round (the package it must be based on, etc.)."""

    config: FederationConfig
    state: HubState
    trust: AllowedSigners
    package_header: Header
    package_model: mf.ModelInfo
    package_plan: mf.Plan
    """The round's plan from the hub's own package: never the plan a bundle claims."""

    def size_bounds(self) -> tuple[int, int]:
        """Sizes a bundle for this round can have, judged from ``fstat`` before reading.

        The data section is exactly what the round's plan asks for (whole, partial or
        statistics bundle); the header is at most the package's plus a manifest's slack.
        """
        data = self.package_header.data_size
        plan = self.package_plan
        if plan is not None:
            specs = expected_specs(
                self.package_header,
                self.package_model.head,
                plan.kind,
                plan.freeze,
                plan.head_solver,
                stats_width(plan.preprocess, self.package_model.input_shape),
            )
            layout = layout_of(specs)
            data = layout[-1].end if layout else 0
            if plan.merge == "fisher" and plan.kind == ROUND_TRAIN:  # F32 fisher.NAME as well
                fisher = sum(t.numel * 4 for t in layout if t.dtype in FLOAT_DTYPES)
                high = min(self.package_header.header_len + HEADER_SLACK_BYTES, MAX_HEADER_BYTES)
                return 8 + 2 + data, 8 + 2 * high + data + fisher
        high = min(self.package_header.header_len + HEADER_SLACK_BYTES, MAX_HEADER_BYTES)
        return 8 + 2 + data, 8 + high + data


def check_policy(
    verified: Verified,
    config: FederationConfig,
    state: HubState,
    package_header: Header,
    package_model: mf.ModelInfo,
    package_plan: mf.Plan,
) -> int:
    """Raise PolicyError unless the hub may accept this bundle now; return its age in rounds.

    ``fisher``: the round's plan merges by Fisher, so the bundle must also carry exactly one
    F32 ``fisher.NAME`` tensor, shaped like NAME, for each float parameter it declares.
    """
    m = verified.manifest
    b = m.bundle
    assert b is not None
    path = verified.path

    def refuse(code: Code, message: str, hint: str) -> PolicyError:
        return PolicyError(message, path=path, code=code, hint=hint)

    if m.federation != config.federation:
        raise refuse(
            Code.WRONG_FEDERATION,
            f"bundle is for federation {m.federation!r}, this hub runs {config.federation!r}",
            "it was carried to the wrong hub",
        )
    age = state.round - m.round
    if age < 0:
        raise refuse(
            Code.FUTURE_ROUND,
            f"bundle claims round {m.round}, the hub is at round {state.round}",
            "no package for that round was ever issued; treat the file as forged",
        )
    if age > config.hub.max_staleness:
        raise refuse(
            Code.STALE,
            f"late bundle: trained on round {m.round}'s package, the hub is at round {state.round}",
            "send the site the current package and ask it to train again"
            + ("" if config.hub.max_staleness else " (or declare a staleness policy at hub init)"),
        )
    if b.base_package_sha256 != state.packages.get(m.round):
        raise refuse(
            Code.WRONG_BASE,
            f"bundle was trained on package {b.base_package_sha256[:12]}…, not on the one this "
            f"hub issued for round {m.round}",
            "the site trained on a package that did not come from this hub",
        )
    if m.model != package_model:
        raise refuse(
            Code.WRONG_MODEL,
            "bundle's model description differs from the package's",
            "the site used another model or class list",
        )
    check_tensor_set(verified, package_header, package_model, package_plan, refuse)
    if not 0 < b.num_samples <= config.hub.max_samples:
        raise refuse(
            Code.SAMPLE_COUNT,
            f"bundle claims {b.num_samples} samples; the cap is {config.hub.max_samples}",
            "raise max_samples in federation.toml if the site really has that much data",
        )
    check_dp_bundle(verified, config, state.dp_accepted.get(b.site, ()))
    return age


def check_tensor_set(
    verified: Verified,
    package_header: Header,
    package_model: mf.ModelInfo,
    plan: mf.Plan,
    refuse: Callable[[Code, str, str], PolicyError],
) -> None:
    """The bundle holds exactly the tensors the round's plan asks for (whole, partial, statistics).

    The plan is the hub's (from the round's package), never the one the bundle claims.
    """
    specs = expected_specs(
        package_header,
        package_model.head,
        plan.kind,
        plan.freeze,
        plan.head_solver,
        stats_width(plan.preprocess, package_model.input_shape),
    )
    if plan.merge == "fisher" and plan.kind == ROUND_TRAIN:
        assert verified.manifest.bundle is not None
        problem = fisher_layout_problem(
            verified.scan.header, specs, verified.manifest.bundle.fisher
        )
        if problem:
            raise refuse(
                Code.WRONG_FISHER,
                f"bundle's Fisher tensors do not fit this round's plan: {problem}",
                "the round merges by Fisher: the site must train with a flsilo that ships "
                "fisher.NAME tensors (and no others)",
            )
        return
    expected = tuple(t.signature() for t in layout_of(specs))
    if verified.scan.header.layout() != expected:
        what = {
            ROUND_STATISTICS: "the head statistics this statistics round asks for",
            ROUND_FEDSTATS: "the input statistics this stats round asks for",
            ROUND_TRAIN: "the package's trainable tensors" if plan.freeze else "the package's",
        }[plan.kind]
        raise refuse(
            Code.WRONG_TENSORS,
            f"bundle's tensor names, dtypes, shapes or layout differ from {what}",
            "the site trained a different model or followed another plan; it cannot be combined",
        )
    if plan.kind == ROUND_STATISTICS:
        check_statistics(verified, plan, refuse)
    if plan.kind == ROUND_FEDSTATS:
        check_fedstats(verified, plan, package_model.input_shape, refuse)


def check_statistics(
    verified: Verified, plan: mf.Plan, refuse: Callable[[Code, str, str], PolicyError]
) -> None:
    """Class counts are whole, sum to num_samples, and respect the plan's minimum cell size."""
    info = next(t for t in verified.scan.header.tensors if t.name == STAT_CLASS_COUNTS)
    with verified.path.open("rb") as fh:
        fh.seek(verified.scan.header.data_start + info.begin)
        counts = np.frombuffer(fh.read(info.nbytes), dtype="<f8")
    b = verified.manifest.bundle
    assert b is not None
    if np.any(counts < 0) or np.any(counts != np.round(counts)) or counts.sum() != b.num_samples:
        raise refuse(
            Code.BAD_STATISTICS,
            f"class counts do not add up to the {b.num_samples} samples the bundle claims",
            "the bundle was not made by 'flsilo train'; ask the site to run it again",
        )
    small = [int(c) for c in counts if 0 < c < plan.min_cell_size]
    if small:
        raise refuse(
            Code.CELL_TOO_SMALL,
            f"bundle reveals a class with {min(small)} samples; the plan's minimum is "
            f"{plan.min_cell_size}",
            "the site should have refused this round; discard the bundle",
        )


def fisher_layout_problem(
    bundle: Header, specs: dict[str, tuple[str, tuple[int, ...]]], declared: tuple[str, ...]
) -> str | None:
    """Why a Fisher bundle's tensor set is wrong, or None when it is exactly right.

    ``specs`` is the tensor set the round asks for; the bundle must hold exactly those plus
    one F32 ``fisher.NAME`` shaped like NAME for each float tensor NAME it declares.
    """
    own = {t.name: t for t in bundle.tensors if not t.name.startswith(FISHER_PREFIX)}
    extra = {t.name: t for t in bundle.tensors if t.name.startswith(FISHER_PREFIX)}
    if {n: (t.dtype, t.shape) for n, t in own.items()} != dict(specs):
        return "the model tensors differ from those the round asks for"
    if not declared:
        return "the manifest declares no Fisher tensors"
    if set(extra) != {FISHER_PREFIX + name for name in declared}:
        return "the fisher.* tensors differ from those the manifest declares"
    for name in declared:
        spec = specs.get(name)
        f = extra[FISHER_PREFIX + name]
        if spec is None or spec[0] not in FLOAT_DTYPES or f.dtype != "F32" or f.shape != spec[1]:
            return f"fisher.{name} is not an F32 tensor shaped like a float model tensor"
    return None


def _claimed_site(path: Path) -> str:
    """Best-effort site id for a report about a file that did not verify."""
    parts = path.name.removesuffix(".safetensors").split("-r")
    tail = parts[-1] if len(parts) > 1 else ""
    return tail.split("-", 1)[1] if "-" in tail else "?"


def inbox_entries(inbox: Path) -> list[os.DirEntry[str]]:
    """``*.safetensors`` entries of the inbox, sorted by name (not followed, not opened)."""
    with os.scandir(inbox) as it:
        return sorted((e for e in it if e.name.endswith(".safetensors")), key=lambda e: e.name)


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
        return examine(Path(entry.path), entry, staging, gate, when, sync)

    # several bundles at once (each already hashes and copies on two threads); the
    # outcomes come back in inbox order, so nothing downstream sees the interleaving
    with ThreadPoolExecutor(INTAKE_WORKERS, thread_name_prefix="flsilo-intake") as pool:
        outcomes = list(pool.map(one, inbox_entries(inbox)))
    for outcome in outcomes:
        if isinstance(outcome, Candidate):
            result.candidates.append(outcome)
        elif isinstance(outcome, Skipped):
            result.skipped.append(outcome)
        else:
            result.rejections.append(outcome)
    return _resolve_duplicates(result)


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
    site = _claimed_site(path)
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
        return Rejection(path, site, "", _size_error(err, low, high), None, sig_bytes)
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
        age = check_policy(
            judged,
            gate.config,
            gate.state,
            gate.package_header,
            gate.package_model,
            gate.package_plan,
        )
    except FlsiloError as err:
        return Rejection(path, site, outcome.sha256, _named(err, path), copy, sig_bytes)
    bundle = outcome.manifest.bundle
    assert bundle is not None
    weight = bundle.num_samples * gate.config.hub.staleness_discount**age
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
            return Skipped(path, sha, f"already aggregated in round {state.accepted[sha]}")
        return Rejection(path, _claimed_site(path), sha, err, copy if sha else None, sig_bytes)
    except OSError as exc:
        unreadable = UnreadableError(f"cannot read the file ({exc.strerror})", path=path)
        return Rejection(path, _claimed_site(path), "", unreadable, None, sig_bytes)
    if verified.sha256 in state.accepted:
        return Skipped(
            path, verified.sha256, f"already aggregated in round {state.accepted[verified.sha256]}"
        )
    return verified


def _finish(reader: ArtifactReader) -> str:
    """Read the rest of a refused file through the same descriptor; its sha256 or ''."""
    try:
        reader.drain()
    except OSError:
        return ""
    return reader.sha256


def _size_error(err: FlsiloError, low: int, high: int) -> FlsiloError:
    if err.code not in (Code.TOO_LARGE, Code.TOO_SMALL):
        return err
    return MalformedInputError(
        f"{err.message.split(',')[0]}: a bundle for this round is {low} to {high} bytes; "
        "it was not read",
        path=err.path,
        code=Code.IMPLAUSIBLE_SIZE,
        hint="this is not a bundle trained on the current package; do not carry it",
    )


def check_revocation(verified: Verified, state: HubState) -> None:
    """Refuse a key the log has revoked, whatever the clock says (the log orders trust)."""
    enrolment = state.enrolment_of(verified.signature.public_key)
    if enrolment is not None and enrolment.revoked_at is not None:
        raise VerificationError(
            f"key of {enrolment.site!r} was revoked at {enrolment.revoked_at}",
            path=verified.path,
            code=Code.KEY_REVOKED,
            hint="files signed with a revoked key are refused; the site needs a new enrolment",
        )


def _resolve_duplicates(result: IntakeResult) -> IntakeResult:
    """One bundle per site per round: identical copies collapse, conflicting ones are refused.

    A reject whose bytes equal an accepted bundle's can only be blamed on its ``.sig``: it is
    recorded as ``signature-damaged`` so the provenance does not read as if the accepted
    bundle had been refused.
    """
    by_site: dict[str, list[Candidate]] = defaultdict(list)
    for c in result.candidates:
        by_site[c.site].append(c)
    kept: list[Candidate] = []
    for site, group in sorted(by_site.items()):
        shas = {c.verified.sha256 for c in group}
        if len(shas) == 1:
            m = group[0].verified.manifest
            canonical = mf.artifact_name(m.federation, m.round, site)
            group.sort(key=lambda c: (c.inbox_path.name != canonical, c.inbox_path.name))
            kept.append(group[0])
            for extra in group[1:]:
                result.skipped.append(
                    Skipped(extra.inbox_path, extra.verified.sha256, "identical copy")
                )
                _unstage(extra.staged)
            continue
        names = ", ".join(c.inbox_path.name for c in group)
        for c in group:
            error = PolicyError(
                f"site {site!r} sent {len(shas)} different bundles for this round ({names})",
                path=c.inbox_path,
                code=Code.CONFLICTING_DUPLICATE,
                hint="ask the site which one is real; remove the others from the inbox and rerun",
            )
            copy = c.staged
            if copy is not None:
                sig_path(copy).unlink(missing_ok=True)
            result.rejections.append(
                Rejection(
                    c.inbox_path, site, c.verified.sha256, error, copy, c.verified.signature_bytes
                )
            )
    result.candidates = kept
    accepted = {c.verified.sha256: c for c in kept}
    result.rejections = [_damaged_signature(r, accepted) for r in result.rejections]
    return result


def _damaged_signature(rejection: Rejection, accepted: dict[str, Candidate]) -> Rejection:
    twin = accepted.get(rejection.sha256) if rejection.sha256 else None
    if twin is None:
        return rejection
    error = VerificationError(
        f"signature file damaged ({rejection.error.code}: {rejection.error.message}); the same "
        f"bundle was accepted from {twin.inbox_path.name}",
        path=rejection.inbox_path,
        code=Code.SIGNATURE_DAMAGED,
        hint="nothing to do for this round; remove the copy with the damaged .sig from the inbox",
    )
    return replace(rejection, error=error)


def _unstage(staged: Path | None) -> None:
    if staged is not None:
        staged.unlink(missing_ok=True)
        sig_path(staged).unlink(missing_ok=True)


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
