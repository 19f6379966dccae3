"""Percentile bootstrap intervals: seeded resamples, one statistic at a time or a whole
block of resamples at once, and the percentiles of what they give.

The intervals are written into signed evaluation reports and model cards, so they are
fixed to the bit: the same seed draws the same resamples in the same order, however they
are blocked, and a figure computed for a block of resamples at once is the float the
one-resample statistic gives (``tests/unit/scoring/test_metrics_reference.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

BOOTSTRAP_DRAWS = 1000
RESAMPLE_BLOCK = 1 << 21
"""Entries of the resample matrix computed at once (a few tens of MiB of work arrays)."""

PERCENTILES = (2.5, 97.5)

RowFigures = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Per figure, one value per resample and whether it is defined there."""


def bootstrap_intervals(
    statistics: Callable[[np.ndarray], Mapping[str, float | None]],
    names: Sequence[str],
    n: int,
    *,
    seed: int,
    draws: int = BOOTSTRAP_DRAWS,
) -> dict[str, tuple[float, float] | None]:
    """Percentile 95% interval of each of ``names`` over ``draws`` resamples of ``n``.

    ``statistics(indices)`` gives every figure of one resample, all from the same
    resamples. Resamples on which a figure is undefined (a class absent from the draw) are
    left out of its interval; fewer than half defined gives None. The same seed gives the
    same intervals, and a figure's interval does not depend on which others come with it.
    """
    if n == 0 or draws <= 0:
        return {name: None for name in names}
    values: dict[str, list[float]] = {name: [] for name in names}
    for block in resamples(n, seed=seed, draws=draws):
        for idx in block:
            figures = statistics(idx)
            for name in names:
                value = figures[name]
                if value is not None:
                    values[name].append(value)
    return percentiles(values, draws)


def bootstrap_rows(
    statistics: Callable[[np.ndarray], RowFigures],
    names: Sequence[str],
    n: int,
    *,
    seed: int,
    draws: int = BOOTSTRAP_DRAWS,
) -> dict[str, tuple[float, float] | None]:
    """:func:`bootstrap_intervals`, with ``statistics(block)`` giving the figures of a whole
    block of resamples (one row of positions each) at once: the same intervals, bit for bit,
    when each row's value is the float the one-resample statistic gives."""
    if n == 0 or draws <= 0:
        return {name: None for name in names}
    return percentiles(defined_rows(statistics, names, n, seed=seed, draws=draws), draws)


def defined_rows(
    statistics: Callable[[np.ndarray], RowFigures],
    names: Sequence[str],
    n: int,
    *,
    seed: int,
    draws: int,
) -> dict[str, np.ndarray]:
    """Each figure's values over the resamples on which it is defined, in draw order."""
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for block in resamples(n, seed=seed, draws=draws):
        figures = statistics(block)
        for name in names:
            value, defined = figures[name]
            values[name].append(value[defined])
    return {name: np.concatenate(found) for name, found in values.items()}


def resamples(n: int, *, seed: int, draws: int) -> Iterator[np.ndarray]:
    """The bootstrap's resampled positions, one row per draw, in blocks of a few million
    entries: the same rows in the same order for a seed, however they are blocked (a
    generator's integers are one stream, whatever the shape they are asked in)."""
    rng = np.random.default_rng(seed)
    per_block = rows_per_block(n)
    for first in range(0, draws, per_block):
        yield rng.integers(0, n, size=(min(per_block, draws - first), n))


def rows_per_block(n: int) -> int:
    """How many resamples of ``n`` :func:`resamples` gives at once."""
    return max(1, RESAMPLE_BLOCK // max(n, 1))


def percentiles(
    values: Mapping[str, Sequence[float] | np.ndarray], draws: int
) -> dict[str, tuple[float, float] | None]:
    """Each figure's interval from its defined values: None if under half the draws. The
    figures with as many values are done in one ``np.percentile`` call, a row each (numpy
    interpolates each row as it would that row alone)."""
    out: dict[str, tuple[float, float] | None] = {}
    counts: dict[int, list[str]] = {}
    for name, found in values.items():
        out[name] = None
        if len(found) >= draws / 2:
            counts.setdefault(len(found), []).append(name)
    for group in counts.values():
        table = np.array([np.asarray(values[name], dtype=np.float64) for name in group])
        low, high = np.percentile(table, PERCENTILES, axis=1)
        for name, a, b in zip(group, low.tolist(), high.tolist(), strict=True):
            out[name] = (a, b)
    return out


def near_percentiles(values: np.ndarray, tolerance: float) -> np.ndarray:
    """Where ``values`` lie within ``tolerance`` of the order statistics that
    :func:`percentiles` reads (and of their neighbours).

    If each value is within ``tolerance / 2`` of an exact one, putting the exact values in
    just there gives the percentiles of the exact values, bit for bit: ``np.percentile``
    reads two order statistics per percentile, and every value left out of the window is
    on the same side of them before and after.
    """
    count = values.size
    near = np.zeros(count, dtype=bool)
    if count == 0:
        return near
    ranks: set[int] = set()
    for q in PERCENTILES:
        k = int(q / 100.0 * (count - 1))
        ranks.update(min(max(r, 0), count - 1) for r in range(k - 2, k + 4))
    ordered = sorted(ranks)
    stats = np.partition(values, ordered)[ordered]
    for value in stats:
        near |= np.abs(values - value) <= tolerance
    return near


def row_sums(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``np.sum`` of each of the consecutive runs of ``values`` of the given lengths, the
    same float as ``np.sum`` of the run alone: the runs of one length are summed together
    as the rows of one contiguous matrix, which numpy sums row by row as it sums a vector
    (pairwise, in the same order)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros(lengths.size)
    if lengths.size == 0:
        return out
    starts = np.cumsum(lengths) - lengths
    by_length = np.argsort(lengths, kind="stable")
    ordered = lengths[by_length]
    cuts = np.flatnonzero(np.diff(ordered, prepend=-1)).tolist()  # a new length
    for low, high in zip(cuts, [*cuts[1:], lengths.size], strict=True):
        length = int(ordered[low])
        if length:
            rows = by_length[low:high]
            out[rows] = values[starts[rows][:, None] + np.arange(length)].sum(axis=1)
    return out
