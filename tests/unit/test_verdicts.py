"""The intake's gates are pure: they judge bytes already read and touch no file."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from flsilo.format.artifact import Verified, sig_path, verify_file
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError
from flsilo.signing.trust import AllowedSigners
from hub_kit.verdicts import (
    Candidate,
    IntakeResult,
    check_statistics,
    claimed_site,
    resolve_duplicates,
)
from tests.conftest import Federation


def _verified(federation: Federation, site: str = "site-a") -> Verified:
    trust = AllowedSigners.load(federation.hub / "allowed_signers")
    return verify_file(federation.bundles[site], trust)


def _refuse(code: Code, message: str, hint: str) -> PolicyError:
    return PolicyError(message, code=code, hint=hint)


def test_statistics_are_judged_from_the_bytes_handed_in(federation: Federation) -> None:
    verified = _verified(federation)
    bundle = verified.manifest.bundle
    assert bundle is not None and bundle.num_samples > 20
    plan = dataclasses.replace(bundle.plan, min_cell_size=5)
    n = bundle.num_samples

    def counts(*values: float) -> bytes:
        return np.array(values, dtype="<f8").tobytes()

    check_statistics(verified, plan, counts(n - 10, 10), _refuse)  # whole, adds up, >= 5
    with pytest.raises(PolicyError) as wrong:
        check_statistics(verified, plan, counts(n - 10, 9), _refuse)
    assert wrong.value.code == Code.BAD_STATISTICS
    with pytest.raises(PolicyError) as small:
        check_statistics(verified, plan, counts(n - 3, 3), _refuse)
    assert small.value.code == Code.CELL_TOO_SMALL and "3 samples" in small.value.message


def test_duplicates_are_decided_and_the_files_left_to_the_caller(
    federation: Federation, tmp_path: Path
) -> None:
    verified = _verified(federation)
    staged = []
    for name in ("a.safetensors", "b.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"staged copy")
        sig_path(path).write_bytes(b"sig")
        staged.append(path)
    site = verified.manifest.bundle.site if verified.manifest.bundle else ""
    canonical = Path(f"fed-r0000-{site}.safetensors")
    twins = [
        Candidate(Path("inbox") / "copy.safetensors", staged[0], verified, 0, 1.0),
        Candidate(Path("inbox") / canonical.name, staged[1], verified, 0, 1.0),
    ]
    result, drop = resolve_duplicates(IntakeResult(list(twins), [], []))
    assert [c.inbox_path.name for c in result.candidates] == [canonical.name]  # canonical kept
    assert [s.why for s in result.skipped] == ["identical copy"]
    assert drop == [staged[0], sig_path(staged[0])]
    assert all(os.path.exists(p) for p in (*staged, *map(sig_path, staged)))  # nothing removed


def test_a_refused_file_names_the_site_its_name_claims() -> None:
    assert claimed_site(Path("fed-r0003-site-b.safetensors")) == "site-b"
    assert claimed_site(Path("stray.safetensors")) == "?"
