"""Pure aggregation functions over K aligned float64 slices (one per accepted bundle).

Every function is deterministic for a fixed input order; callers order inputs by site id,
so the same bundles in any arrival order give bit-identical results.
"""

from __future__ import annotations

import numpy as np


def weighted_mean(slices: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """sum_k w_k x_k / sum_k w_k, accumulated in float64 in the given order."""
    acc = np.zeros_like(slices[0])
    for values, weight in zip(slices, weights, strict=True):
        np.multiply(values, float(weight), out=values)
        np.add(acc, values, out=acc)
    acc /= float(np.sum(weights))
    return acc


def coordinate_median(slices: list[np.ndarray]) -> np.ndarray:
    """Coordinate-wise median (mean of the two middle values when K is even)."""
    return np.median(np.stack(slices), axis=0)


def trimmed_mean(slices: list[np.ndarray], beta: float) -> np.ndarray:
    """Coordinate-wise mean after dropping the floor(beta*K) lowest and highest values."""
    stacked = np.sort(np.stack(slices), axis=0)
    k = int(np.floor(beta * len(slices)))
    kept = stacked[k : len(slices) - k]
    return kept.mean(axis=0)
