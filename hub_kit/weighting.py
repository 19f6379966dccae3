"""Hub policy on whole updates: the cap on one site's weight share and the norm gate.

Both are pure functions of numbers the aggregator measured; the aggregator records what
they decided (clipped weights in the provenance and the log, gated bundles as rejects with
a reason file), so ``audit --replay`` needs neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError

DOMINANT_SHARE = 0.5
"""Above this share of a round's weight, one site alone outweighs all the others together."""
SUGGESTED_CAP = 0.4

NO_CAP_AT_INIT = (
    "no --max-weight-share is set: a site's weight follows its sample count, so one large "
    "site (or one that reports inflated counts) can take almost all of a round's weight and "
    f"steer the model alone; consider --max-weight-share {SUGGESTED_CAP:g} (no site above "
    f"{100 * SUGGESTED_CAP:g}% of a round; it must be at least 1/K for K sites), or set it per "
    "round with aggregate --max-weight-share"
)
"""What ``hub init`` says when the federation sets no cap on one site's weight share."""


def dominant_share_warning(
    sites: Sequence[str], weights: Sequence[float], cap: float | None
) -> str | None:
    """A warning when no cap is set and one site holds more than half of a round's weight.

    ``sites`` and ``weights`` are the round's accepted bundles (a site's bundles are summed).
    None when a cap is set (the aggregator enforces it), when the round has fewer than two
    sites (no one is outweighed), or when no site is above half.
    """
    if cap is not None:
        return None
    by_site: dict[str, float] = {}
    for site, weight in zip(sites, weights, strict=True):
        by_site[site] = by_site.get(site, 0.0) + weight
    total = math.fsum(by_site.values())
    if len(by_site) < 2 or total <= 0:
        return None
    site, top = max(by_site.items(), key=lambda kv: (kv[1], kv[0]))
    share = top / total
    if share <= DOMINANT_SHARE:
        return None
    return (
        f"{site} holds {100 * share:.0f}% of this round's weight and no --max-weight-share is "
        f"set: one site outweighs all the others together; consider --max-weight-share "
        f"{SUGGESTED_CAP:g} for this round, or set it for the federation"
    )


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
