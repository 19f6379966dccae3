"""Hub policy on whole updates: the cap on one site's weight share and the norm gate.

Both are pure functions of numbers the aggregator measured; the aggregator records what
they decided (clipped weights in the provenance and the log, gated bundles as rejects with
a reason file), so ``audit --replay`` needs neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flsilo.codes import Code
from flsilo.errors import UsageError


def check_share_cap(
    cap: float, sites: int | None = None, *, source: str = "--max-weight-share"
) -> None:
    """A fraction in (0, 1]; for K sites, a cap below 1/K cannot be met: a usage error."""
    if not 0 < cap <= 1:
        raise UsageError(
            f"{source} {cap:g} is not a fraction in (0, 1]",
            code=Code.BAD_WEIGHT_SHARE,
            hint="e.g. --max-weight-share 0.4 keeps any one site at or below 40%",
        )
    if sites is not None and cap * sites < 1 - 1e-12:
        raise UsageError(
            f"{source} {cap:g} is below 1/{sites}: {sites} sites cannot all stay under it",
            code=Code.BAD_WEIGHT_SHARE,
            hint=f"use at least {1 / sites:.4g} for {sites} sites, or wait for more sites",
        )


def cap_shares(weights: Sequence[float], cap: float) -> tuple[list[float], list[bool]]:
    """Clip every site whose share of the total exceeds ``cap`` to exactly ``cap``.

    Water-filling: capped sites get ``cap * T`` where ``T`` is the new total, the others keep
    their weight; repeated until no uncapped site exceeds the cap. Returns the new weights
    (same total as the uncapped sites imply) and which sites were clipped.
    """
    k = len(weights)
    check_share_cap(cap, k)
    capped = [False] * k
    while True:
        free_total = math.fsum(w for w, c in zip(weights, capped, strict=True) if not c)
        n_capped = sum(capped)
        if n_capped == k or cap * n_capped >= 1:
            return [1.0 / k] * k if n_capped == k else list(weights), capped
        total = free_total / (1 - cap * n_capped)
        over = [i for i in range(k) if not capped[i] and weights[i] > cap * total * (1 + 1e-12)]
        if not over:
            new = [cap * total if c else float(w) for w, c in zip(weights, capped, strict=True)]
            return new, capped
        for i in over:
            capped[i] = True


def shares(weights: Sequence[float]) -> list[float]:
    total = math.fsum(weights)
    return [w / total for w in weights]


def norm_gate(norms: Sequence[float], multiple: float) -> tuple[list[bool], float]:
    """Which updates exceed ``multiple`` times the median update norm; and that median."""
    ordered = sorted(norms)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return [n > multiple * median for n in norms], median
