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


def fisher_weighted_mean(
    slices: list[np.ndarray], fishers: list[np.ndarray], weights: np.ndarray, eps: float = 1e-8
) -> np.ndarray:
    """Fisher-weighted averaging (Matena & Raffel, NeurIPS 2022; FedFisher, AISTATS 2024).

    sum_k w_k (F_k + eps) x_k / sum_k w_k (F_k + eps), elementwise, where F_k is site k's
    diagonal Fisher (mean over its samples; negative values, impossible for a Fisher, count
    as 0) and w_k its sample count, so w_k F_k is the Fisher summed over the site's data.
    Where every site's Fisher is 0 this is the sample-weighted average.
    """
    num = np.zeros_like(slices[0])
    den = np.zeros_like(slices[0])
    for values, fisher, weight in zip(slices, fishers, weights, strict=True):
        f = (np.maximum(fisher, 0.0) + eps) * float(weight)
        num += f * values
        den += f
    return num / den
