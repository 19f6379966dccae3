"""The hub's aggregation rules on whole models held in memory (simulate, results scripts).

Same rules, same two passes as the streaming aggregator, on dicts of numpy arrays instead of
mapped files: float tensors are combined in float64, other tensors take the element-wise
maximum. The hub itself always streams (``hub_kit.streaming``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hub_kit.strategies.base import Rule, is_two_pass
from hub_kit.strategies.robust import dot


def update_gram(
    base: Mapping[str, np.ndarray], sites: Sequence[Mapping[str, np.ndarray]]
) -> np.ndarray:
    """Gram matrix of the sites' float updates against ``base``."""
    names = [n for n, v in base.items() if np.issubdtype(v.dtype, np.floating)]
    updates = [
        np.concatenate(
            [
                np.ravel(s[n]).astype(np.float64) - np.ravel(base[n]).astype(np.float64)
                for n in names
            ]
        )
        if names
        else np.zeros(0)
        for s in sites
    ]
    k = len(sites)
    gram = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            gram[i, j] = gram[j, i] = dot(updates[i], updates[j])
    return gram


def combine_states(
    base: Mapping[str, np.ndarray],
    sites: Sequence[Mapping[str, np.ndarray]],
    weights: Sequence[float],
    rule: Rule,
) -> dict[str, np.ndarray]:
    """Aggregate site models (same names, shapes, dtypes as ``base``) with ``rule``."""
    w = np.array(weights, dtype=np.float64)
    coefficients = None
    if is_two_pass(rule):
        coefficients = rule.coefficients(update_gram(base, sites), w)  # type: ignore[union-attr]
    out: dict[str, np.ndarray] = {}
    for name, b in base.items():
        if not np.issubdtype(b.dtype, np.floating):
            out[name] = np.max(np.stack([s[name] for s in sites]), axis=0)
            continue
        b64 = np.ravel(b).astype(np.float64)
        xs = [np.ravel(s[name]).astype(np.float64) for s in sites]
        if coefficients is not None:
            acc = np.zeros_like(b64)
            for x, c in zip(xs, coefficients.tolist(), strict=True):
                acc += c * (x - b64)
            combined = b64 + acc
        else:
            combined = rule.combine(xs, w.copy())  # type: ignore[union-attr]
        out[name] = combined.astype(b.dtype).reshape(b.shape)
    return out
