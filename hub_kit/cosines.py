"""The round's robust aggregate and each update's cosine to it.

The robust aggregate is the coordinate-wise median of the round's updates (unweighted: one
vote per site). ``hub_kit.streaming`` computes it chunk by chunk, in the same bounded
memory as the rest of a pass, and accumulates the sums :func:`cosines` turns into one
cosine per update: a sign-flipped or otherwise reversed update points away from the median
(cosine near -1) however it is scaled. The median of up to ``SORTING_NETWORK_MAX`` updates
comes from a sorting network of element-wise minima and maxima over whole chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from flsilo.format.tensorfile import FLOAT_DTYPES, TensorInfo
from hub_kit.strategies.robust import dot


@dataclass(frozen=True)
class FirstPass:
    """What the first pass measured: the Gram matrix of the updates and, when asked, each
    update's dot product with the coordinate-wise median update and that median's norm."""

    gram: np.ndarray
    median_sums: np.ndarray | None = None
    """See :func:`cosines` (None: not measured)."""

    def cosines(self) -> list[float | None]:
        """Each update's cosine to the median update (None without it, or for a zero vector)."""
        if self.median_sums is None:
            return [None] * len(self.gram)
        return cosines(self.median_sums)


def cosines(sums: np.ndarray) -> list[float | None]:
    """``<u_i, m> / (|u_i| |m|)``, clipped to [-1, 1], from the sums over the sample of K
    updates: ``<u_i, m>`` for each i, then ``<m, m>``, then ``<u_i, u_i>`` for each i."""
    k = (len(sums) - 1) // 2
    out: list[float | None] = []
    for dot_i, n2 in zip(sums[:k].tolist(), sums[k + 1 :].tolist(), strict=True):
        scale = math.sqrt(max(n2, 0.0) * max(float(sums[k]), 0.0))
        out.append(max(-1.0, min(1.0, dot_i / scale)) if scale > 0 else None)
    return out


def median_sums(offset: int, stride: int, updates: list[np.ndarray]) -> np.ndarray:
    """One chunk's share of the sums :func:`cosines` takes, over the sample's elements;
    ``offset`` is the chunk's first element's index among the file's float elements."""
    k = len(updates)
    sample = [u[(-offset) % stride :: stride] for u in updates]
    m = median_update(sample)
    out = np.zeros(2 * k + 1)
    out[k] = dot(m, m)
    for i, u in enumerate(sample):
        out[i] = dot(u, m)
        out[k + 1 + i] = dot(u, u)
    return out


SORTING_NETWORK_MAX = 32
"""Up to this many updates the median comes from a sorting network of element-wise minima
and maxima over whole chunks, several times faster than ``np.median`` across a short axis."""


@cache
def sorting_network(k: int) -> tuple[tuple[int, int], ...]:
    """The compare-exchange pairs of Batcher's odd-even merge sort for ``k`` values (as if
    padded with +inf to a power of two; pairs that touch the padding never exchange)."""
    n = 1
    while n < k:
        n *= 2
    pairs = []
    p = 1
    while p < n:
        step = p
        while step >= 1:
            for j in range(step % p, n - step, 2 * step):
                for i in range(min(step, n - j - step)):
                    if (i + j) // (2 * p) == (i + j + step) // (2 * p) and i + j + step < k:
                        pairs.append((i + j, i + j + step))
            step //= 2
        p *= 2
    return tuple(pairs)


MEDIAN_SAMPLE = 1 << 22
"""Coordinates the median update is taken over: all of a model's float elements up to this
many, above it an evenly spaced sample of about this many (every S-th element in file order),
so the cosines cost a bounded share of the round however large the model."""


def median_stride(layout: Sequence[TensorInfo]) -> int:
    """S: the cosines use float elements whose index in file order is a multiple of S."""
    total = sum(t.numel for t in layout if t.dtype in FLOAT_DTYPES)
    return max(1, total // MEDIAN_SAMPLE)


def median_update(updates: Sequence[np.ndarray]) -> np.ndarray:
    """The coordinate-wise median of one chunk's updates (the mean of the middle two for an
    even count)."""
    k = len(updates)
    if k > SORTING_NETWORK_MAX:
        return np.median(np.stack(updates, axis=1), axis=1)
    v = [u.copy() for u in updates]
    for i, j in sorting_network(k):
        low = np.minimum(v[i], v[j])
        np.maximum(v[i], v[j], out=v[j])
        v[i] = low
    if k % 2:
        return v[k // 2]
    return np.add(v[k // 2 - 1], v[k // 2]) / 2
