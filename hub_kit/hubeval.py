"""``aggregate --eval DATA``: the hub scores each new package on a test set it holds.

The scoring itself (data adapters, the model, the figures) is the sites' evaluation code,
which the hub kit does not import: the command line passes in a :class:`TestSetEvaluator`
(``sim_kit.hubeval``). The round opens the test set before it touches the inbox, so bad
DATA fails before anything is staged or committed; the next package is then computed once
into memory without the claim (an :class:`Unscored` image, signed there and never written),
scored, and written once with the claim in its manifest (the same tensor bytes, named by the
claim's ``data_sha256``). The same claim goes into the round's ``aggregate`` log event;
``audit`` checks that the two agree (:func:`claim_problem`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flsilo.format import manifest as mf
from flsilo.format.artifact import Verified
from flsilo.signing.claims import HubEvaluation
from flsilo.signing.trust import AllowedSigners
from hub_kit.events import Aggregate


@dataclass(frozen=True)
class Unscored:
    """The next package without its claim, in memory only: its bytes (header, then the
    round's tensors) and the hub's signature over them; ``path`` names it in messages."""

    path: Path
    data: bytes
    signature: bytes


class TestSetEvaluator(Protocol):
    """Scores packages on the hub's test set (passed in from above the hub kit)."""

    def check(self, package: mf.Manifest) -> None:
        """Open the test set for the current package's model (format, shapes, labels within the classes);
        raise a :class:`flsilo.runtime.errors.FlsiloError` when it cannot be used."""

    def __call__(self, package: Unscored, trust: AllowedSigners, data_sha256: str) -> HubEvaluation:
        """Verify ``package`` against ``trust``, score it, and return the claim."""


def claim_field(package: mf.PackageInfo | None) -> dict[str, Any] | None:
    """The aggregate event's copy of the package's claim (None without one)."""
    claim = package.hub_evaluation if package is not None else None
    return mf.to_jsonable(claim) if claim is not None else None


def audit_claim(
    add: Callable[[str, bool, str], None],
    round_: int,
    package: Verified,
    event: Aggregate | None,
) -> None:
    """``audit``'s line for a package with a hub claim (in its manifest or its round's
    aggregate event); nothing for a round aggregated without ``--eval``."""
    assert package.manifest.package is not None
    logged = event.hub_evaluation if event is not None else None
    if package.manifest.package.hub_evaluation is None and logged is None:
        return
    problem = claim_problem(logged, package.manifest.package, package.data_sha256)
    add(
        f"hub claim r{round_:04d}",
        problem is None,
        problem or "the package's and the log's claims agree (figures not recomputed)",
    )


def claim_problem(
    logged: Mapping[str, Any] | None, package: mf.PackageInfo, data_sha256: str
) -> str | None:
    """Why a round's logged claim and its package's claim disagree, or None.

    Both present and equal, naming the package's tensors, or both absent; the figures are
    not recomputed (the test set stays at the hub)."""
    signed = package.hub_evaluation
    if logged is None and signed is None:
        return None
    if logged is None:
        return "the package carries a hub evaluation claim that its aggregate event lacks"
    if signed is None:
        return "the aggregate event records a hub evaluation claim that the package lacks"
    if dict(logged) != mf.to_jsonable(signed):
        return "the hub evaluation claim in the log differs from the package's"
    if signed.data_sha256 != data_sha256:
        return "the hub evaluation claim names other tensors than the package's"
    return None
