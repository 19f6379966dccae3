"""Build and sign hub packages: the manifest of a round and its safetensors file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flsilo import manifest as mf
from flsilo.artifact import write_artifact
from flsilo.federation import FederationConfig
from flsilo.tensorfile import RawTensor


def package_manifest(
    config: FederationConfig,
    model: mf.ModelInfo,
    round_: int,
    parent_sha256: str | None,
    provenance: mf.Provenance | None,
    software: dict[str, str] | None = None,
) -> mf.Manifest:
    plan = config.plan_for_round(round_)
    return mf.Manifest(
        kind=mf.KIND_PACKAGE,
        format_version=mf.FORMAT_VERSION,
        federation=config.federation,
        round=round_,
        created_at=mf.now_utc(),
        software=mf.software_versions(software),
        model=model,
        package=mf.PackageInfo(
            schedule=config.schedule,
            final=plan is None,
            plan=plan,
            parent_sha256=parent_sha256,
            provenance=provenance,
        ),
    )


def write_package(
    directory: Path,
    manifest: mf.Manifest,
    tensors: Mapping[str, RawTensor],
    key: Ed25519PrivateKey,
) -> tuple[Path, str]:
    """Write (or rewrite, when a crashed attempt left one uncommitted) the round's package."""
    path = directory / mf.artifact_name(manifest.federation, manifest.round)
    sha = write_artifact(path, tensors, manifest, key, overwrite=True)
    return path, sha
