"""Closed-form heads from summed site statistics: ridge (Fed3R) and nearest class mean (FedNCM).

Fed3R: Fanì et al., "Accelerating Heterogeneous Federated Learning with Closed-form
Classifiers", ICML 2024. FedNCM: Legate et al., "Guiding The Last Layer in Federated
Learning with Pre-Trained Models", NeurIPS 2023.

Sites send, per class c, the count n_c and the feature sum s_c, and for ridge the Gram
matrix G of the features with a constant 1 appended. Summed over sites these are exactly the
pooled statistics, so the head below is the centralized solution on the pooled features,
whatever the label skew. Everything is float64 numpy in a fixed order; the linear solve is a
hand-written Cholesky (no multithreaded LAPACK), so the same inputs give the same bits.
"""

from __future__ import annotations

import numpy as np

from flsilo.format.tensorsets import SOLVER_NCM, parse_solver
from flsilo.plans.plan import CLASSIFY, MULTILABEL

REPLAY_ATOL = 1e-6
LOGIT_SLOPE = 4.0
"""multilabel: a ridge fit's probability estimate r becomes the logit 4 (r - 0.5)."""
"""Absolute tolerance recorded in the package for replay on another machine's numpy."""


def sum_statistics(per_site: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Element-wise float64 sums over sites, accumulated in the given (site id) order."""
    total = {name: np.zeros_like(value, dtype=np.float64) for name, value in per_site[0].items()}
    for stats in per_site:
        for name, value in stats.items():
            np.add(total[name], value, out=total[name])
    return total


def cholesky_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` for symmetric positive definite ``a``, row by row, deterministically."""
    n = a.shape[0]
    lower = np.zeros_like(a)
    for j in range(n):
        d = a[j, j] - float(np.sum(lower[j, :j] * lower[j, :j]))
        if not d > 0:
            raise np.linalg.LinAlgError("matrix is not positive definite")
        lower[j, j] = np.sqrt(d)
        below = a[j + 1 :, j] - np.sum(lower[j + 1 :, :j] * lower[j, :j], axis=1)
        lower[j + 1 :, j] = below / lower[j, j]
    y = np.zeros_like(b)
    for i in range(n):
        y[i] = (b[i] - np.sum(lower[i, :i, None] * y[:i], axis=0)) / lower[i, i]
    x = np.zeros_like(b)
    for i in range(n - 1, -1, -1):
        x[i] = (y[i] - np.sum(lower[i + 1 :, i, None] * x[i + 1 :], axis=0)) / lower[i, i]
    return x


def ridge_head(
    gram: np.ndarray, class_sums: np.ndarray, class_counts: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression of one-hot labels on [features, 1]; the bias is not penalised.

    Minimises sum_i ||W x_i + b - onehot(y_i)||^2 + lam ||W||^2. ``gram`` is
    sum_i [x_i, 1][x_i, 1]^T; the feature-label products are the class sums and counts.
    Returns (W of shape C x d, b of shape C).
    """
    d = class_sums.shape[1]
    products = np.concatenate([class_sums, class_counts[:, None]], axis=1).T  # (d+1, C)
    penalty = np.full(d + 1, lam)
    penalty[d] = 0.0
    solution = cholesky_solve(gram + np.diag(penalty), products)
    return solution[:d].T.copy(), solution[d].copy()


def ncm_head(class_sums: np.ndarray, class_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest class mean as a linear layer: W_c = mu_c, b_c = -||mu_c||^2 / 2.

    argmax_c (mu_c . x - ||mu_c||^2 / 2) is argmin_c ||x - mu_c||. A class no site holds
    gets a zero mean and a very negative bias (finite even in float16): never predicted.
    """
    present = class_counts > 0
    means = np.zeros_like(class_sums)
    means[present] = class_sums[present] / class_counts[present, None]
    bias = -0.5 * np.sum(means * means, axis=1)
    bias[~present] = -30000.0
    return means, bias


def solve_head(
    solver: str, stats: dict[str, np.ndarray], task: str = CLASSIFY
) -> tuple[np.ndarray, np.ndarray]:
    """The head (W, b) for summed statistics, by the plan's ``ridge[:LAMBDA]`` or ``ncm``.

    For ``multilabel`` the statistics are of multi-hot targets, and the ridge fit r = W x + b
    estimates each finding's probability; the head returned is LOGIT_SLOPE * (r - 0.5), a
    logit that the model's sigmoid maps back to about r near 0.5 (the slope of the logistic
    there is 1/4), so a threshold of 0.5 means r >= 0.5."""
    from flsilo.format.tensorsets import STAT_CLASS_COUNTS, STAT_CLASS_SUMS, STAT_GRAM

    name, lam = parse_solver(solver)
    sums, counts = stats[STAT_CLASS_SUMS], stats[STAT_CLASS_COUNTS]
    if name == SOLVER_NCM:
        return ncm_head(sums, counts)
    weight, bias = ridge_head(stats[STAT_GRAM], sums, counts, lam)
    if task == MULTILABEL:
        return LOGIT_SLOPE * weight, LOGIT_SLOPE * (bias - 0.5)
    return weight, bias
