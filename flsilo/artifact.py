"""Read, verify and write flsilo artifacts: a canonical safetensors file plus ``FILE.sig``.

The verifier is pure: :func:`verify_stream` takes an open stream (through an
:class:`ArtifactReader`), the exact signature bytes, a trust policy and an explicit time, and
returns what it verified (header, manifest, file sha256, data-section sha256, the signature
bytes). It reads the file once: every byte goes through the hashes, the finite-float check
and, optionally, a copy. Which kind of artifact is wanted, which round, which site: that is
the callers' policy (:func:`require_kind` and the kits). :func:`verify_file` opens a path
safely and calls it; ``write_artifact`` writes file and signature atomically (the signature
lands first, the file's appearance is the commit).
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flsilo import manifest as mf
from flsilo.atomic import atomic_writer
from flsilo.codes import Code
from flsilo.errors import MalformedInputError, PolicyError, UsageError, VerificationError
from flsilo.keys import PrivateKey
from flsilo.sshsig import Signature, check_signature, new_hash, parse_signature, sign_digest
from flsilo.tensorfile import (
    Header,
    RawTensor,
    build_header,
    nonfinite_count,
    parse_header,
    read_header_length,
)
from flsilo.trust import SignerEntry, TrustPolicy
from flsilo.untrusted import MAX_SIGNATURE_BYTES, UnreadableError, open_regular, read_bounded

CHUNK_BYTES = 8 * 1024 * 1024


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
        near = (
            sorted(p.name for p in path.parent.glob("*.safetensors"))
            if path.parent.is_dir()
            else []
        )
        raise UsageError(
            "no such file",
            path=path,
            code=Code.NO_SUCH_FILE,
            hint=f"check the path; {path.parent} holds {', '.join(near[:3])}"
            if near
            else "check the path and the folder it names",
        )


class ArtifactReader:
    """Reads one stream once: every byte goes to the hashes and, optionally, a copy.

    ``size`` is what ``fstat`` said; nothing beyond it is ever read, so a file that grows
    cannot make a reader loop. After a failure, :meth:`drain` finishes the pass so the file's
    sha256 and the copy are complete without opening the file again.
    """

    def __init__(
        self, fh: io.BufferedIOBase, size: int, *, copy_to: BinaryIO | None = None
    ) -> None:
        self.fh = fh
        self.size = size
        self.copy_to = copy_to
        self.position = 0
        self._hashes = {"sha256": new_hash("sha256")}

    def want(self, algorithm: str) -> None:
        """Also compute ``algorithm`` (only before the first byte is read)."""
        if algorithm not in self._hashes:
            assert self.position == 0
            self._hashes[algorithm] = new_hash(algorithm)

    def _feed(self, chunk: memoryview | bytes) -> None:
        for h in self._hashes.values():
            h.update(chunk)
        if self.copy_to is not None:
            self.copy_to.write(chunk)
        self.position += len(chunk)

    def read(self, n: int) -> bytes:
        data = self.fh.read(max(0, min(n, self.size - self.position)))
        self._feed(data)
        return data

    def readinto(self, view: memoryview) -> int:
        want = min(len(view), self.size - self.position)
        if want <= 0:
            return 0
        n = self.fh.readinto(view[:want]) or 0
        self._feed(view[:n])
        return n

    def drain(self) -> None:
        """Read whatever is left up to ``size`` (after a failure), so digests cover the file."""
        buffer = bytearray(min(CHUNK_BYTES, max(self.size - self.position, 1)))
        view = memoryview(buffer)
        while self.readinto(view):
            pass

    def grew(self) -> bool:
        return bool(self.fh.read(1))

    def digests(self) -> dict[str, bytes]:
        return {a: h.digest() for a, h in self._hashes.items()}

    @property
    def complete(self) -> bool:
        return self.position == self.size

    @property
    def sha256(self) -> str:
        """The file's sha256 hex digest; empty unless the whole file went through."""
        return self._hashes["sha256"].hexdigest() if self.complete else ""


def read_signature_bytes(path: Path) -> bytes:
    """The exact bytes of ``path.sig``: a small regular file, refused by size before reading."""
    sig_file = sig_path(path)
    try:
        return read_bounded(sig_file, MAX_SIGNATURE_BYTES)
    except MalformedInputError as exc:
        if exc.code == Code.MISSING:
            raise VerificationError(
                f"signature file {sig_file.name} is missing",
                path=path,
                code=Code.MISSING_SIGNATURE,
                hint=f"copy {sig_file.name} along with the file; an unsigned file is never trusted",
            ) from exc
        if exc.code == Code.TOO_LARGE:
            raise MalformedInputError(
                f"signature file is larger than {MAX_SIGNATURE_BYTES} bytes; it was not read",
                path=sig_file,
                code=Code.SIGNATURE_TOO_LARGE,
                hint="an SSH signature is under 1 KiB; this is not one, get a fresh copy",
            ) from exc
        raise


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
    data_hash = hashlib.sha256()
    buffer = bytearray(min(CHUNK_BYTES, max(header.data_size, 1)))
    view = memoryview(buffer)
    nonfinite: dict[str, int] = {}
    for info in header.tensors:
        remaining = info.nbytes
        while remaining:
            n = reader.readinto(view[: min(remaining, len(buffer))])
            if not n:
                raise _shrank(source)
            chunk = view[:n]
            data_hash.update(chunk)
            bad = nonfinite_count(info.dtype, chunk)
            if bad:
                nonfinite[info.name] = nonfinite.get(info.name, 0) + bad
            remaining -= n
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
        data_sha256=data_hash.hexdigest(),
    )


def _shrank(source: Path) -> MalformedInputError:
    return MalformedInputError(
        "file shrank while it was being read",
        path=source,
        code=Code.TRUNCATED,
        hint="do not modify files while flsilo reads them",
    )


def scan_file(
    path: Path, *, hash_algorithms: tuple[str, ...] = ("sha256",), copy_to: BinaryIO | None = None
) -> Scan:
    """Open ``path`` safely (a regular file, not followed through a link) and scan it."""
    opened = open_regular(path)
    with opened.fh:
        reader = ArtifactReader(opened.fh, opened.size, copy_to=copy_to)
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
) -> Verified:
    """Verify ``path`` against ``path.sig`` and ``trust`` at ``at`` (default now); raise on failure."""
    check_is_file(path)
    signature_bytes = read_signature_bytes(path)
    opened = open_regular(path)
    with opened.fh:
        reader = ArtifactReader(opened.fh, opened.size, copy_to=copy_to)
        when = int(time.time()) if at is None else at
        try:
            verified = verify_stream(reader, signature_bytes, trust, at=when, source=path)
        except OSError as exc:
            raise UnreadableError(f"cannot read the file ({exc.strerror})", path=path) from exc
    return require_kind(verified, expected_kind) if expected_kind is not None else verified


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


def sha256_file(path: Path) -> str:
    """sha256 of a regular file (opened without following links)."""
    opened = open_regular(path)
    with opened.fh:
        reader = ArtifactReader(opened.fh, opened.size)
        reader.drain()
    return reader.sha256
