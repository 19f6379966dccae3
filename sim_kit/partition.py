"""Split labeled data across sites (iid, dirichlet:ALPHA, shards:K) and hold out a test set."""

from __future__ import annotations

import numpy as np

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError


def train_test_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of indices."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(len(idx) * test_fraction)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def partition(y: np.ndarray, sites: int, scheme: str, seed: int) -> list[np.ndarray]:
    """Indices into ``y`` for each site.

    - ``iid``: shuffled and dealt evenly;
    - ``dirichlet:ALPHA``: per class, site shares drawn from Dirichlet(ALPHA) (small ALPHA,
      strong label skew);
    - ``shards:K``: sorted by label, cut into sites*K shards, K per site (the FedAvg paper's
      pathological non-IID split; K=2 gives most sites two digits).
    """
    rng = np.random.default_rng(seed)
    name, _, arg = scheme.partition(":")
    if name == "iid" and not arg:
        order = rng.permutation(len(y))
        return [np.sort(part) for part in np.array_split(order, sites)]
    if name == "dirichlet":
        alpha = float(arg)
        parts: list[list[int]] = [[] for _ in range(sites)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet([alpha] * sites)
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for s, chunk in enumerate(np.split(idx, cuts)):
                parts[s].extend(chunk.tolist())
        return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    if name == "shards":
        k = int(arg)
        order = np.argsort(y, kind="stable")
        shards = np.array_split(order, sites * k)
        chosen = rng.permutation(sites * k)
        return [
            np.sort(np.concatenate([shards[i] for i in chosen[s * k : (s + 1) * k]]))
            for s in range(sites)
        ]
    raise UsageError(
        f"partition {scheme!r} is not known",
        code=Code.BAD_PARTITION,
        hint="use iid, dirichlet:ALPHA (e.g. dirichlet:0.5) or shards:K (e.g. shards:2)",
    )


def shift(x: np.ndarray, kind: str) -> np.ndarray:
    """A site-specific preprocessing difference: ``none``, ``invert``, ``dim`` or ``blur``."""
    if kind == "none":
        return x
    if kind == "invert":
        return 1.0 - x
    if kind == "dim":
        return (x * 0.5 + 0.25).astype(np.float32)
    if kind == "blur":
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        acc = np.zeros_like(x)
        for i in range(3):
            for j in range(3):
                acc += padded[:, :, i : i + x.shape[2], j : j + x.shape[3]]
        return (acc / 9.0).astype(np.float32)
    raise UsageError(f"shift {kind!r} is not known", hint="use none, invert, dim or blur")


def strata(y: np.ndarray) -> np.ndarray:
    """One label per sample to split and partition by: the class, or a multi-hot row's bits;
    one stratum for targets of several lengths (sequence strings), which split at random."""
    if y.dtype == object:
        return np.zeros(len(y), dtype=np.int64)
    if y.ndim == 1:
        return y
    bits = (np.asarray(y).reshape(len(y), -1) > 0.5).astype(np.int64)
    return bits @ (2 ** np.arange(bits.shape[1], dtype=np.int64))
