"""Read, verify and write flsilo artifacts: a canonical safetensors file plus ``FILE.sig``.

The verifier is pure: :func:`verify_stream` takes an open stream (through an
:class:`~flsilo.format.readpass.ArtifactReader`), the exact signature bytes, a trust policy and an
explicit time, and returns what it verified (header, manifest, file sha256, data-section
sha256, the signature bytes). It reads the file once (:mod:`flsilo.format.readpass`): each big
chunk goes through the file's hash, the data section's hash, the finite-float check and,
optionally, a copy, all at once on several cores. Which kind of artifact is wanted, which round, which site: that is
the callers' policy (:func:`require_kind` and the kits). :func:`verify_file` opens a path
safely and calls it; ``write_artifact`` writes file and signature atomically (the signature
lands first, the file's appearance is the commit).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flsilo.format import manifest as mf
from flsilo.format.copynames import renamed_signature
from flsilo.format.readpass import CHUNK_BYTES, ArtifactReader
from flsilo.format.tensorfile import (
    Header,
    RawTensor,
    TensorInfo,
    build_header,
    nonfinite_count,
    parse_header,
    read_header_length,
)
from flsilo.fs.atomic import atomic_writer
from flsilo.fs.untrusted import UnreadableError, open_regular, read_signature_file
from flsilo.runtime import progress
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError, PolicyError, UsageError, VerificationError
from flsilo.signing.keys import PrivateKey
from flsilo.signing.sshsig import Signature, check_signature, parse_signature, sign_digest
from flsilo.signing.trust import SignerEntry, TrustPolicy


def sig_path(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


@dataclass(frozen=True)
class Scan:
    """What one pass over an artifact found (nothing here is trusted yet)."""

    path: Path
    header: Header
    manifest: mf.Manifest
    digests: dict[str, bytes]
    nonfinite: dict[str, int]
    data_sha256: str = ""

    @property
    def sha256(self) -> str:
        return self.digests["sha256"].hex()


@dataclass(frozen=True)
class Verified:
    """An artifact whose structure, signature and signer all checked out."""

    scan: Scan
    signature: Signature
    signer: SignerEntry
    signature_bytes: bytes = b""

    @property
    def manifest(self) -> mf.Manifest:
        return self.scan.manifest

    @property
    def header(self) -> Header:
        return self.scan.header

    @property
    def sha256(self) -> str:
        return self.scan.sha256

    @property
    def data_sha256(self) -> str:
        return self.scan.data_sha256

    @property
    def path(self) -> Path:
        return self.scan.path


def check_is_file(path: Path) -> None:
    """A mistyped path or a folder is said as such, never as a missing ``.sig``."""
    if path.is_dir():
        raise UsageError(
            "this is a folder, not a package or bundle file",
            path=path,
            code=Code.NOT_A_FILE,
            hint=f"give one .safetensors file inside it, e.g. {path / '*.safetensors'}",
        )
    if not path.exists():
        raise UsageError(
            "no such file", path=path, code=Code.NO_SUCH_FILE, hint=missing_file_hint(path)
        )


def missing_file_hint(path: Path) -> str:
    """What to try instead of a path that does not exist: the file with its extension, the
    newest name it begins, the closest name to a typo, or what the folder holds (a cut list
    says it is cut)."""
    if path.suffix != ".safetensors" and path.with_name(path.name + ".safetensors").is_file():
        return f"did you mean {path.name}.safetensors?"
    names = (
        sorted(p.name for p in path.parent.glob("*.safetensors")) if path.parent.is_dir() else []
    )
    if not names:
        return "check the path and the folder it names"
    stem = path.name.removesuffix(".safetensors")
    begun = [n for n in names if n.startswith(stem)]
    if begun:  # a name cut short ("xray", "xray-r0002"): names sort by round, newest last
        return f"did you mean {max(begun)}?"
    # a typo: the closest name (of equally close ones, the newest), never just the newest
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.9)
    if close:
        return f"did you mean {close[0]}?"
    shown = ", ".join(names[-3:])
    more = f" (the newest 3 of {len(names)})" if len(names) > 3 else ""
    return f"check the path; {path.parent} holds {shown}{more}"


def read_signature_bytes(path: Path) -> bytes:
    """The exact bytes of ``path.sig``: a small regular file, refused by size before reading."""
    sig_file = sig_path(path)
    data = read_signature_file(sig_file)
    if data is None:
        hint = f"copy {sig_file.name} along with the file; an unsigned file is never trusted"
        renamed = renamed_signature(path)
        if renamed is not None:  # a careless copy's name: the person renames it, never flsilo
            hint = (
                f"{renamed} is beside it: if it is this file's signature under a name a copy "
                f"gave it, rename it to {sig_file.name} and run again"
            )
        raise VerificationError(
            f"signature file {sig_file.name} is missing",
            path=path,
            code=Code.MISSING_SIGNATURE,
            hint=hint,
        )
    return data


def read_signature(path: Path) -> Signature:
    sig_file = sig_path(path)
    return parse_signature(read_signature_bytes(path), source=str(sig_file))


def scan_stream(reader: ArtifactReader, source: Path) -> Scan:
    """Check structure and manifest, hash every byte and count non-finite floats, in one read."""
    name = str(source)
    prefix = reader.read(8)
    header_len = read_header_length(prefix, reader.size, name)
    header_bytes = reader.read(header_len)
    if len(header_bytes) != header_len:
        raise _shrank(source)
    header = parse_header(header_bytes, reader.size, name)
    manifest = mf.decode(header.metadata, name)
    reader.start_data()
    size = min(CHUNK_BYTES, max(header.data_size, 1))
    # two buffers in turn: one is read and checked while the other's chunk is hashed
    views = [memoryview(bytearray(size)), memoryview(bytearray(size))]
    nonfinite: dict[str, int] = {}
    for turn, (length, spans) in enumerate(_reads(header.tensors, size)):
        piece = views[turn % 2][:length]

        def check(chunk: memoryview, length: int = length, spans: list[Span] = spans) -> None:
            if len(chunk) == length:  # a short read is checked once it is whole, below
                _count_nonfinite(chunk, spans, nonfinite)

        got = reader.readinto(piece, check)
        if got == length:
            continue
        while got < length:
            n = reader.readinto(piece[got:]) if got else 0
            if not n:
                raise _shrank(source)
            got += n
        _count_nonfinite(piece, spans, nonfinite)
    if reader.grew():
        raise MalformedInputError(
            "file grew while it was being read", path=source, code=Code.BAD_LENGTH
        )
    return Scan(
        path=source,
        header=header,
        manifest=manifest,
        digests=reader.digests(),
        nonfinite=nonfinite,
        data_sha256=reader.data_sha256,
    )


Span = tuple[TensorInfo, int, int]
"""A tensor's bytes in one read: the tensor, and where they begin and end in the read."""


def _reads(tensors: tuple[TensorInfo, ...], size: int) -> list[tuple[int, list[Span]]]:
    """The data section as reads of at most ``size`` bytes, in order: small tensors together
    (one read, one float check per run of a dtype, not one of each per tensor), a larger
    tensor alone, in pieces; each read with its length and the spans it holds."""
    reads: list[tuple[int, list[Span]]] = []
    spans: list[Span] = []
    length = 0
    for info in tensors:
        if info.nbytes > size or length + info.nbytes > size:
            if spans:
                reads.append((length, spans))
            spans, length = [], 0
        if info.nbytes > size:
            for start in range(0, info.nbytes, size):
                piece = min(size, info.nbytes - start)
                reads.append((piece, [(info, 0, piece)]))
        elif info.nbytes:
            spans.append((info, length, length + info.nbytes))
            length += info.nbytes
    if spans:
        reads.append((length, spans))
    return reads


def _count_nonfinite(chunk: memoryview, spans: list[Span], nonfinite: dict[str, int]) -> None:
    """Add each tensor's NaN and infinite values in ``chunk`` to ``nonfinite`` (by name, in
    tensor order); a run of tensors of one dtype is counted one by one only if it holds any."""
    start = 0
    while start < len(spans):
        dtype = spans[start][0].dtype
        end = start + 1
        while end < len(spans) and spans[end][0].dtype == dtype:
            end += 1
        if nonfinite_count(dtype, chunk[spans[start][1] : spans[end - 1][2]]):
            for info, begin, stop in spans[start:end]:
                bad = nonfinite_count(dtype, chunk[begin:stop])
                if bad:
                    nonfinite[info.name] = nonfinite.get(info.name, 0) + bad
        start = end


def _shrank(source: Path) -> MalformedInputError:
    return MalformedInputError(
        "file shrank while it was being read",
        path=source,
        code=Code.TRUNCATED,
        hint="do not modify files while flsilo reads them",
    )


def scan_file(
    path: Path,
    *,
    hash_algorithms: tuple[str, ...] = ("sha256",),
    copy_to: BinaryIO | None = None,
    data_digest: bool = True,
) -> Scan:
    """Open ``path`` safely (a regular file, not followed through a link) and scan it.

    ``data_digest=False``: no data-section SHA-256 (``data_sha256`` is ''), one hash pass.
    """
    opened = open_regular(path)
    with opened.fh:
        reader = ArtifactReader(opened.fh, opened.size, copy_to=copy_to, data_digest=data_digest)
        for algorithm in hash_algorithms:
            reader.want(algorithm)
        try:
            return scan_stream(reader, path)
        except OSError as exc:
            raise UnreadableError(f"cannot read the file ({exc.strerror})", path=path) from exc


def check_finite(scan: Scan) -> None:
    if scan.nonfinite:
        name, count = next(iter(scan.nonfinite.items()))
        raise MalformedInputError(
            f"tensor {name!r} holds {count} NaN or infinite values"
            + (f" (and {len(scan.nonfinite) - 1} more tensors)" if len(scan.nonfinite) > 1 else ""),
            path=scan.path,
            code=Code.NON_FINITE,
            hint="training diverged at the site; lower the learning rate and retrain",
        )


def verify_scan(
    scan: Scan,
    signature: Signature,
    trust: TrustPolicy,
    *,
    at: int | None = None,
    signature_bytes: bytes = b"",
) -> Verified:
    """Signature, then signer trust, then finite floats (the order of the messages people see)."""
    manifest = scan.manifest
    source = str(scan.path)
    check_signature(
        signature, manifest.namespace, scan.digests[signature.hash_algorithm], source=source
    )
    when = int(time.time()) if at is None else at
    entry = trust.check(
        manifest.principal, manifest.namespace, signature.public_key, when, source=source
    )
    check_finite(scan)
    return Verified(scan=scan, signature=signature, signer=entry, signature_bytes=signature_bytes)


def verify_stream(
    reader: ArtifactReader,
    signature_bytes: bytes,
    trust: TrustPolicy,
    *,
    at: int,
    source: Path,
) -> Verified:
    """The pure verifier: stream + exact signature bytes + trust + time -> what verified.

    No path is opened here; ``source`` only names the file in messages. The kind of
    artifact is not checked: that is the caller's policy (see :func:`require_kind`).
    """
    signature = parse_signature(signature_bytes, source=str(sig_path(source)))
    reader.want(signature.hash_algorithm)
    scan = scan_stream(reader, source)
    return verify_scan(scan, signature, trust, at=at, signature_bytes=signature_bytes)


def require_kind(verified: Verified, kind: str) -> Verified:
    """Policy: refuse a verified artifact of the other kind (a package where a bundle belongs)."""
    if verified.manifest.kind != kind:
        raise PolicyError(
            f"this is a {verified.manifest.kind}, expected a {kind}",
            path=verified.path,
            code=Code.WRONG_KIND,
            hint="site bundles go to the hub; hub packages go to sites",
        )
    return verified


def verify_file(
    path: Path,
    trust: TrustPolicy,
    *,
    expected_kind: str | None = None,
    at: int | None = None,
    copy_to: BinaryIO | None = None,
    data_digest: bool = True,
) -> Verified:
    """Verify ``path`` against ``path.sig`` and ``trust`` at ``at`` (default now); raise on failure.

    ``data_digest=False``: skip the data section's own SHA-256 (``data_sha256`` is then
    ''), for a caller that does not use it: one hash pass instead of two.
    """
    check_is_file(path)
    signature_bytes = read_signature_bytes(path)
    when = int(time.time()) if at is None else at
    verified = _verify_opened(path, signature_bytes, trust, when, copy_to, data_digest)
    return require_kind(verified, expected_kind) if expected_kind is not None else verified


def verify_bytes(
    data: bytes,
    signature_bytes: bytes,
    trust: TrustPolicy,
    *,
    source: Path,
    expected_kind: str | None = None,
) -> Verified:
    """Verify an artifact held in memory, never written (the hub's next package before its
    claim, ``aggregate --eval``) as :func:`verify_file` verifies a file; ``source`` names it
    in messages."""
    reader = ArtifactReader(io.BytesIO(data), len(data))
    verified = verify_stream(reader, signature_bytes, trust, at=int(time.time()), source=source)
    return require_kind(verified, expected_kind) if expected_kind is not None else verified


def _verify_opened(
    path: Path,
    signature_bytes: bytes,
    trust: TrustPolicy,
    when: int,
    copy_to: BinaryIO | None,
    data_digest: bool,
) -> Verified:
    opened = open_regular(path)
    with opened.fh, progress.unit(opened.size):
        reader = ArtifactReader(opened.fh, opened.size, copy_to=copy_to, data_digest=data_digest)
        try:
            return verify_stream(reader, signature_bytes, trust, at=when, source=path)
        except OSError as exc:
            raise UnreadableError(f"cannot read the file ({exc.strerror})", path=path) from exc


def write_artifact(
    path: Path,
    tensors: Mapping[str, RawTensor],
    manifest: mf.Manifest,
    key: PrivateKey,
    *,
    overwrite: bool = False,
) -> str:
    """Write ``path`` and ``path.sig`` atomically; return the file's sha256 hex digest."""
    if not overwrite and path.exists():
        raise UsageError(
            "refusing to overwrite an existing artifact",
            path=path,
            code=Code.EXISTS,
            hint="artifacts are never replaced; move the old one away if it is truly wrong",
        )
    metadata = {mf.MANIFEST_KEY: mf.encode(manifest)}
    specs = {name: (t.dtype, t.shape) for name, t in tensors.items()}
    header_bytes, infos = build_header(specs, metadata)
    digest = hashlib.sha256(header_bytes)
    with atomic_writer(path) as fh:
        fh.write(header_bytes)
        for info in infos:
            data = tensors[info.name].data
            if data.nbytes != info.nbytes:
                raise ValueError(f"tensor {info.name}: {data.nbytes} bytes, expected {info.nbytes}")
            fh.write(data)
            digest.update(data)
        sig = sign_digest(key, manifest.namespace, digest.digest())
        with atomic_writer(sig_path(path)) as sig_fh:
            sig_fh.write(sig)
    return digest.hexdigest()


def sha256_file(path: Path, *, follow: bool = False) -> str:
    """sha256 of a regular file (opened without following links unless ``follow``: a path
    the user named, such as a checkpoint in a download cache made of links)."""
    opened = open_regular(path, follow=follow)
    with opened.fh:
        reader = ArtifactReader(opened.fh, opened.size)
        reader.drain()
    return reader.sha256
