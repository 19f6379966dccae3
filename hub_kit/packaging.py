"""Build and sign hub packages: the manifest of a round and its safetensors file."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from flsilo.format import manifest as mf
from flsilo.format.artifact import sig_path, write_artifact
from flsilo.format.readpass import run_on_chunk
from flsilo.format.tensorfile import RawTensor, TensorInfo, build_header
from flsilo.fs.atomic import atomic_writer, write_bytes
from flsilo.plans.federation import FederationConfig
from flsilo.signing import oms
from flsilo.signing.keys import PrivateKey
from flsilo.signing.sshsig import sign_digest
from hub_kit.fedstats import Normalisation, with_normalisation


def package_manifest(
    config: FederationConfig,
    model: mf.ModelInfo,
    round_: int,
    parent_sha256: str | None,
    provenance: mf.Provenance | None,
    software: dict[str, str] | None = None,
    *,
    release: mf.ReleasePolicy | None = None,
    log_head: str | None = None,
    key_chain: tuple[mf.KeyRotation, ...] = (),
    statistics: Normalisation | None = None,
) -> mf.Manifest:
    """The manifest of the round's package; ``statistics`` (from a stats round, or carried
    from the parent package's plan) goes into its plan's ``[plan.preprocess]``."""
    plan = config.plan_for_round(round_)
    if plan is not None and statistics is not None:
        plan = with_normalisation(plan, statistics)
    model_input = plan or config.plan  # the final package: the federation's, with statistics
    if plan is None and statistics is not None:
        model_input = with_normalisation(config.plan, statistics)
    created_at = mf.now_utc()
    expires_at = None
    if plan is not None and config.hub.package_ttl > 0:
        expires_at = mf.epoch_to_iso(mf.iso_to_epoch(created_at) + config.hub.package_ttl * 86400)
    return mf.Manifest(
        kind=mf.KIND_PACKAGE,
        format_version=mf.FORMAT_VERSION,
        federation=config.federation,
        round=round_,
        created_at=created_at,
        software=mf.software_versions(software),
        model=model,
        package=mf.PackageInfo(
            schedule=config.schedule,
            final=plan is None,
            plan=plan,
            parent_sha256=parent_sha256,
            provenance=provenance,
            expires_at=expires_at,
            release=release,
            key_chain=key_chain,
            log_head=log_head,
            preprocess=model_input.preprocess,
        ),
    )


def write_package(
    directory: Path,
    manifest: mf.Manifest,
    tensors: Mapping[str, RawTensor],
    key: PrivateKey,
) -> tuple[Path, str]:
    """Write (or rewrite, when a crashed attempt left one uncommitted) the round's package.

    A P-256 hub key also writes ``PACKAGE.sigstore.json``, the OpenSSF model signing bundle.
    """
    path = directory / mf.artifact_name(manifest.federation, manifest.round)
    sha = write_artifact(path, tensors, manifest, key, overwrite=True)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        write_bytes(oms.bundle_path(path), oms.make_bundle(key, path.name, sha))
    return path, sha


T = TypeVar("T")


def _begin(info: TensorInfo) -> int:
    return info.begin


def _header(manifest: mf.Manifest, layout: tuple[TensorInfo, ...]) -> tuple[bytes, int]:
    """The package's header (the manifest in its metadata) and its data section's size."""
    specs = {t.name: (t.dtype, t.shape) for t in layout}
    header_bytes, infos = build_header(specs, {mf.MANIFEST_KEY: mf.encode(manifest)})
    if [i.signature() for i in infos] != [t.signature() for t in sorted(layout, key=_begin)]:
        raise ValueError("the package layout is not canonical")
    return header_bytes, infos[-1].end if infos else 0


def package_image(
    manifest: mf.Manifest,
    layout: tuple[TensorInfo, ...],
    produce: Callable[[Callable[[memoryview], object]], T],
) -> tuple[bytes, int, T]:
    """The package's bytes in memory, as :func:`write_package_stream` would write them
    (unsigned, nothing written): ``(bytes, where the data section starts, what produce
    returned)``. For ``aggregate --eval``, which scores the package before its claim goes
    into the header; memory then holds the package once."""
    header_bytes, size = _header(manifest, layout)
    image = bytearray(len(header_bytes) + size)
    image[: len(header_bytes)] = header_bytes
    at = len(header_bytes)

    def write(chunk: memoryview) -> None:
        nonlocal at
        if at + chunk.nbytes > len(image):
            raise ValueError("the round wrote more data bytes than the layout needs")
        image[at : at + chunk.nbytes] = chunk
        at += chunk.nbytes

    result = produce(write)
    if at != len(image):
        raise ValueError(f"wrote {at - len(header_bytes)} data bytes, the layout needs {size}")
    return bytes(image), len(header_bytes), result


def write_package_stream(
    directory: Path,
    manifest: mf.Manifest,
    layout: tuple[TensorInfo, ...],
    produce: Callable[[Callable[[memoryview], object]], T],
    key: PrivateKey,
) -> tuple[Path, str, T]:
    """Write the round's package while ``produce`` computes it, then sign it.

    ``produce(write)`` must write the data section of ``layout`` in file order; the header
    goes first, every byte is hashed as it is written, and the file and its signature
    appear atomically (signature first) once all bytes are on disk. Memory stays bounded
    by what ``produce`` holds, not by the model size.
    """
    path = directory / mf.artifact_name(manifest.federation, manifest.round)
    header_bytes, expected = _header(manifest, layout)
    digest = hashlib.sha256(header_bytes)
    written = 0
    with atomic_writer(path) as fh:
        fh.write(header_bytes)

        def write(chunk: memoryview) -> None:
            nonlocal written
            run_on_chunk([fh.write, digest.update], chunk)  # on two cores at once
            written += chunk.nbytes

        result = produce(write)
        if written != expected:
            raise ValueError(f"wrote {written} data bytes, the layout needs {expected}")
        sig = sign_digest(key, manifest.namespace, digest.digest())
        with atomic_writer(sig_path(path)) as sig_fh:
            sig_fh.write(sig)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        write_bytes(oms.bundle_path(path), oms.make_bundle(key, path.name, digest.hexdigest()))
    return path, digest.hexdigest(), result
