"""Read, verify and write flsilo artifacts: a canonical safetensors file plus ``FILE.sig``.

``scan_file`` reads a file once: it checks the header, then streams every tensor through the
hash, the finite-float check and, optionally, a copy, so verifying and archiving a bundle
costs one read. ``verify_file`` adds the signature and trust decision; ``write_artifact``
writes file and signature atomically (the signature lands first, the file's appearance is
the commit).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flsilo import manifest as mf
from flsilo.atomic import atomic_writer
from flsilo.errors import MalformedInputError, PolicyError, UsageError, VerificationError
from flsilo.keys import PrivateKey
from flsilo.sshsig import Signature, check_signature, new_hash, parse_signature, sign_digest
from flsilo.tensorfile import Header, RawTensor, build_header, nonfinite_count, read_header
from flsilo.trust import SignerEntry, TrustPolicy

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

    @property
    def sha256(self) -> str:
        return self.digests["sha256"].hex()


@dataclass(frozen=True)
class Verified:
    """An artifact whose structure, signature and signer all checked out."""

    scan: Scan
    signature: Signature
    signer: SignerEntry

    @property
    def manifest(self) -> mf.Manifest:
        return self.scan.manifest

    @property
    def sha256(self) -> str:
        return self.scan.sha256

    @property
    def path(self) -> Path:
        return self.scan.path


def check_is_file(path: Path) -> None:
    """A mistyped path or a folder is said as such, never as a missing ``.sig``."""
    if path.is_dir():
        raise UsageError(
            "this is a folder, not a package or bundle file",
            path=path,
            code="not-a-file",
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
            code="no-such-file",
            hint=f"check the path; {path.parent} holds {', '.join(near[:3])}"
            if near
            else "check the path and the folder it names",
        )


def read_signature(path: Path) -> Signature:
    sig_file = sig_path(path)
    try:
        data = sig_file.read_bytes()
    except FileNotFoundError as exc:
        raise VerificationError(
            f"signature file {sig_file.name} is missing",
            path=path,
            code="missing-signature",
            hint=f"copy {sig_file.name} along with the file; an unsigned file is never trusted",
        ) from exc
    except OSError as exc:
        raise VerificationError(
            f"cannot read signature ({exc.strerror})", path=sig_file, code="missing-signature"
        ) from exc
    return parse_signature(data, source=str(sig_file))


def scan_file(
    path: Path, *, hash_algorithms: tuple[str, ...] = ("sha256",), copy_to: BinaryIO | None = None
) -> Scan:
    """Check structure and manifest, hash every byte and count non-finite floats, in one read."""
    source = str(path)
    algorithms = tuple(dict.fromkeys(("sha256", *hash_algorithms)))
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise MalformedInputError(
            "file not found", path=path, code="missing", hint="check the path"
        ) from exc
    except OSError as exc:
        raise MalformedInputError(f"cannot read file ({exc.strerror})", path=path) from exc
    with fh:
        size = os.fstat(fh.fileno()).st_size
        header, header_bytes = read_header(fh, size, source)
        manifest = mf.decode(header.metadata, source)
        hashes = [new_hash(a) for a in algorithms]
        for h in hashes:
            h.update(header_bytes)
        if copy_to is not None:
            copy_to.write(header_bytes)
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        nonfinite: dict[str, int] = {}
        for info in header.tensors:
            remaining = info.nbytes
            while remaining:
                n = fh.readinto(view[: min(remaining, CHUNK_BYTES)])
                if not n:
                    raise MalformedInputError(
                        "file shrank while it was being read",
                        path=path,
                        code="truncated",
                        hint="do not modify files while flsilo reads them",
                    )
                chunk = view[:n]
                for h in hashes:
                    h.update(chunk)
                if copy_to is not None:
                    copy_to.write(chunk)
                bad = nonfinite_count(info.dtype, chunk)
                if bad:
                    nonfinite[info.name] = nonfinite.get(info.name, 0) + bad
                remaining -= n
        if fh.read(1):
            raise MalformedInputError(
                "file grew while it was being read", path=path, code="bad-length"
            )
    return Scan(
        path=path,
        header=header,
        manifest=manifest,
        digests={a: h.digest() for a, h in zip(algorithms, hashes, strict=True)},
        nonfinite=nonfinite,
    )


def check_finite(scan: Scan) -> None:
    if scan.nonfinite:
        name, count = next(iter(scan.nonfinite.items()))
        raise MalformedInputError(
            f"tensor {name!r} holds {count} NaN or infinite values"
            + (f" (and {len(scan.nonfinite) - 1} more tensors)" if len(scan.nonfinite) > 1 else ""),
            path=scan.path,
            code="non-finite",
            hint="training diverged at the site; lower the learning rate and retrain",
        )


def verify_scan(
    scan: Scan, signature: Signature, trust: TrustPolicy, *, at: int | None = None
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
    return Verified(scan=scan, signature=signature, signer=entry)


def verify_file(
    path: Path,
    trust: TrustPolicy,
    *,
    expected_kind: str | None = None,
    at: int | None = None,
    copy_to: BinaryIO | None = None,
) -> Verified:
    """Verify ``path`` against ``path.sig`` and ``trust``; raise on any failure."""
    check_is_file(path)
    signature = read_signature(path)
    scan = scan_file(path, hash_algorithms=(signature.hash_algorithm,), copy_to=copy_to)
    if expected_kind is not None and scan.manifest.kind != expected_kind:
        raise PolicyError(
            f"this is a {scan.manifest.kind}, expected a {expected_kind}",
            path=path,
            code="wrong-kind",
            hint="site bundles go to the hub; hub packages go to sites",
        )
    return verify_scan(scan, signature, trust, at=at)


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
            code="exists",
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
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()
