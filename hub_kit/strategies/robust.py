"""Pure functions for the two-pass robust rules, in the span of the sites' updates.

Every aggregate a two-pass rule produces is ``sum_k c_k u_k`` (``u_k`` = bundle k minus the
round's package), so distances between updates and any such combination follow from the
Gram matrix ``G[i, j] = <u_i, u_j>`` alone: ``||u_k - sum_j c_j u_j||^2 = G_kk - 2 (G c)_k +
c'Gc``. Iterative rules (Weiszfeld, centered clipping) therefore run on K numbers instead of
on the model. Sums use numpy's fixed-order reduction (no BLAS), so the same inputs give the
same coefficients bit for bit on the same software stack.
"""

from __future__ import annotations

import numpy as np


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Deterministic inner product (element-wise product, then numpy's pairwise sum)."""
    return float(np.add.reduce(np.multiply(a, b)))


def gram_times(gram: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.array([dot(row, c) for row in gram], dtype=np.float64)


def normalised(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / float(np.add.reduce(w))


def squared_distances(gram: np.ndarray) -> np.ndarray:
    """Pairwise ``||u_i - u_j||^2`` (clamped at 0 against rounding)."""
    diag = np.diag(gram)
    return np.maximum(diag[:, None] + diag[None, :] - 2.0 * gram, 0.0)


def distances_to(gram: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``||u_k - sum_j c_j u_j||`` for every k."""
    gc = gram_times(gram, c)
    return np.sqrt(np.maximum(np.diag(gram) - 2.0 * gc + dot(c, gc), 0.0))


def clip_scale(distance: np.ndarray, bound: float) -> np.ndarray:
    """``min(1, bound / d)``, 1 where d is 0."""
    out = np.ones_like(distance)
    far = distance > bound
    out[far] = bound / distance[far]
    return out


def krum_scores(gram: np.ndarray, f: int) -> np.ndarray:
    """Sum of squared distances to the K - f - 2 nearest other updates (Blanchard et al.)."""
    d2 = squared_distances(gram)
    k = len(gram)
    near = k - f - 2
    scores = np.empty(k)
    for i in range(k):
        others = np.sort(np.delete(d2[i], i))
        scores[i] = float(np.add.reduce(others[:near]))
    return scores


def weiszfeld(
    gram: np.ndarray, alpha: np.ndarray, *, nu: float = 1e-6, iterations: int = 100
) -> np.ndarray:
    """Smoothed Weiszfeld (RFA, Pillutla et al.) in coefficient space: the geometric median
    ``argmin_v sum_k alpha_k max(nu, ||v - u_k||)`` as coefficients over the updates."""
    a = normalised(alpha)
    c = a.copy()
    previous = np.inf
    for _ in range(iterations):
        d = distances_to(gram, c)
        objective = dot(a, d)
        if previous - objective <= 1e-10 * max(objective, 1e-300):
            break
        previous = objective
        beta = a / np.maximum(d, nu)
        c = beta / float(np.add.reduce(beta))
    return c


def centered_clip(gram: np.ndarray, alpha: np.ndarray, tau: float, iterations: int) -> np.ndarray:
    """Centered clipping (Karimireddy et al.) from the round's package (c = 0)."""
    a = normalised(alpha)
    c = np.zeros(len(gram))
    eye = np.eye(len(gram))
    for _ in range(iterations):
        scale = clip_scale(distances_to(gram, c), tau)
        step = np.zeros_like(c)
        for k in range(len(c)):
            step += (a[k] * scale[k]) * (eye[k] - c)
        c = c + step
    return c


def group_matrix(k: int, groups: int, weights: np.ndarray) -> np.ndarray:
    """Row g averages group g: consecutive blocks of the inputs (ordered by site, sha256)."""
    a = np.zeros((groups, k))
    for g, members in enumerate(np.array_split(np.arange(k), groups)):
        a[g, members] = normalised(weights[members])
    return a


def project_gram(gram: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Gram matrix of the combinations ``a @ u`` (rows of ``a``)."""
    m = len(a)
    out = np.empty((m, m))
    for i in range(m):
        gi = gram_times(gram, a[i])
        for j in range(m):
            out[i, j] = dot(a[j], gi)
    return out
