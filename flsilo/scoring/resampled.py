"""One binary problem's figures over a whole block of bootstrap resamples at once.

A resample is held as how many times it drew from each *cell* of samples (equal score,
truth and decision, the cells from the highest score), so nothing is sorted per resample.
Every figure is the float :func:`flsilo.scoring.metrics.binary_metrics` gives on the
resample, bit for bit: counts are integers, AUROC's rank sums are halves of integers
(exact in any order), and average precision is ``np.sum`` over the same terms as there
(:func:`exact_ap`). Average precision is first found within a few ulps for every resample
(:func:`rows_ranked`), and exactly where the percentiles read it (``binary_intervals``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flsilo.scoring.bootstrap import row_sums

RANKED = ("auroc", "ap")
CHUNK = 1 << 15
"""Entries of the resample matrix worked on at once (rows_binary)."""


@dataclass(frozen=True)
class Cells:
    """A binary problem's samples in cells; ``groups``: the cells of each distinct score."""

    n: int
    cell: np.ndarray  # each sample's cell
    outcome: tuple[np.ndarray, np.ndarray, np.ndarray]  # the cells of tp, fp and fn
    truth: np.ndarray  # per cell, 1 for the positives
    groups: np.ndarray | None  # the first cell of each distinct score (None: one cell each)
    positive: np.ndarray  # the distinct scores (groups) that have positives
    positive_cells: np.ndarray  # the cells of positives
    positive_runs: np.ndarray | None  # where each score starts among positive_cells

    @classmethod
    def of(cls, truth: np.ndarray, pred: np.ndarray, score: np.ndarray) -> Cells:
        order = np.lexsort((pred, truth, -score))  # scores from the highest, as mergesort
        s, t, p = score[order], truth[order], pred[order]
        new_score = np.r_[True, s[1:] != s[:-1]]
        new_cell = new_score | np.r_[True, (t[1:] != t[:-1]) | (p[1:] != p[:-1])]
        firsts = np.flatnonzero(new_cell)
        cell = np.empty(truth.size, dtype=np.int64)
        cell[order] = np.cumsum(new_cell) - 1
        t, p = t[firsts], p[firsts]
        outcome = (np.flatnonzero(t & p), np.flatnonzero(~t & p), np.flatnonzero(t & ~p))
        group = np.cumsum(new_score[firsts]) - 1  # each cell's distinct score
        positive_cells = np.flatnonzero(t)
        runs = np.diff(group[positive_cells], prepend=-1) != 0  # a new score
        return cls(
            n=truth.size,
            cell=cell,
            outcome=outcome,
            truth=t.astype(np.int64),
            groups=None if new_score.all() else np.flatnonzero(new_score[firsts]),
            positive=group[positive_cells][runs],
            positive_cells=positive_cells,
            positive_runs=None if runs.all() else np.flatnonzero(runs),
        )

    @property
    def ap_tolerance(self) -> float:
        """Twice a bound on how far :func:`rows_ranked`'s average precision is from the
        exact one: each is within a few ulps per term of the true sum, of at most ``n``
        terms of at most 1 (the bound here is over a thousand times theirs)."""
        return 2e-12 * (self.n + 10)

    def drawn(self, block: np.ndarray) -> np.ndarray:
        """How many times each resample (row of positions) drew from each cell."""
        size = self.truth.size
        keys = self.cell[block]
        keys += size * np.arange(len(block))[:, None]
        return np.bincount(keys.ravel(), minlength=len(block) * size).reshape(len(block), size)

    def grouped(self, drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per resample and distinct score: the entries drawn, and the positives among them."""
        if self.groups is None:
            return drawn, drawn * self.truth
        count = np.add.reduceat(drawn, self.groups, axis=1)
        return count, np.add.reduceat(drawn * self.truth, self.groups, axis=1)


def _rows_ratio(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    defined = den != 0
    return np.divide(num, den, out=np.zeros(num.shape), where=defined), defined


def rows_binary(
    cells: Cells, block: np.ndarray, names: Sequence[str], *, exact: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The figures ``names`` of each resample in ``block`` (rows of positions): values, and
    where each is defined; average precision within a few ulps unless ``exact``.

    The rows are taken a few at a time, so that the work arrays stay small: in the
    processor's cache, and reused by the allocator instead of mapped afresh."""
    step = max(1, CHUNK // cells.n)
    parts = [
        _chunk_binary(cells, block[first : first + step], names, exact=exact)
        for first in range(0, len(block), step)
    ]
    if len(parts) == 1:
        return parts[0]
    return {
        name: (
            np.concatenate([part[name][0] for part in parts]),
            np.concatenate([part[name][1] for part in parts]),
        )
        for name in parts[0]
    }


def _chunk_binary(
    cells: Cells, block: np.ndarray, names: Sequence[str], *, exact: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    drawn = cells.drawn(block)
    tp, fp, fn = (drawn[:, cells_of].sum(axis=1) for cells_of in cells.outcome)
    tn = cells.n - tp - fp - fn
    sens, sens_ok = _rows_ratio(tp, tp + fn)
    spec, spec_ok = _rows_ratio(tn, tn + fp)
    out = {
        "sensitivity": (sens, sens_ok),
        "specificity": (spec, spec_ok),
        "ppv": _rows_ratio(tp, tp + fp),
        "npv": _rows_ratio(tn, tn + fn),
        "f1": _rows_ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": ((sens + spec) / 2, sens_ok & spec_ok),
    }
    if any(name in RANKED for name in names):
        out.update(rows_ranked(cells, drawn))
        if exact:
            ap, ap_ok = out["ap"]
            ap[ap_ok] = exact_ap(cells, drawn[ap_ok])
    return out


def rows_ranked(cells: Cells, drawn: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """AUROC (exact) and average precision (within a few ulps) of each resample, from the
    distinct scores that have positives only."""
    n, rows = cells.n, len(drawn)
    roc, ap = np.zeros(rows), np.zeros(rows)
    if cells.positive.size == 0:
        undefined = np.zeros(rows, dtype=bool)
        return {"auroc": (roc, undefined), "ap": (ap, undefined)}
    hits = drawn[:, cells.positive_cells]
    if cells.positive_runs is not None:
        hits = np.add.reduceat(hits, cells.positive_runs, axis=1)
    if cells.groups is None:
        count, upto = hits, np.cumsum(drawn, axis=1)[:, cells.positive]
    else:
        grouped = np.add.reduceat(drawn, cells.groups, axis=1)
        count, upto = grouped[:, cells.positive], np.cumsum(grouped, axis=1)[:, cells.positive]
    tps = np.cumsum(hits, axis=1)  # positives at or above each score
    pos = tps[:, -1]
    neg = n - pos
    roc_ok = (pos > 0) & (neg > 0)
    # twice the sum of the positives' ranks (a score's ties share their average rank,
    # (2 * (n - upto) + count + 1) / 2), in integers: exact, as binary_metrics' float is
    twice = (2 * n + 1) * pos - np.einsum("ij,ij->i", hits, 2 * upto - count)
    rank_sum = twice / 2.0
    roc[roc_ok] = (rank_sum[roc_ok] - pos[roc_ok] * (pos[roc_ok] + 1) / 2.0) / (
        pos[roc_ok] * neg[roc_ok]
    )
    ap_ok = pos > 0
    # the sum over the positives' scores of the recall gained there times the precision
    precision = tps / np.maximum(upto, 1)
    ap[ap_ok] = np.einsum("ij,ij->i", hits, precision)[ap_ok] / pos[ap_ok]
    return {"auroc": (roc, roc_ok), "ap": (ap, ap_ok)}


def exact_ap(cells: Cells, drawn: np.ndarray) -> np.ndarray:
    """:func:`flsilo.scoring.metrics.average_precision` of each resample (each with
    positives), the same float: the same terms, one per distinct score drawn, summed as
    ``np.sum`` sums them."""
    count, hits = cells.grouped(drawn)
    thresholds = count > 0  # each resample's distinct scores, in order
    per_row = thresholds.sum(axis=1)
    where = np.flatnonzero(thresholds)  # (taking these is faster than a boolean index)
    tps = np.cumsum(hits, axis=1)
    found = np.take(tps, where)
    recall = found / np.repeat(tps[:, -1], per_row)
    precision = found / np.take(np.cumsum(count, axis=1), where)
    before = np.empty_like(recall)
    before[1:] = recall[:-1]
    before[np.cumsum(per_row) - per_row] = 0.0
    return row_sums((recall - before) * precision, per_row)
