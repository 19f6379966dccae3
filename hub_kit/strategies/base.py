"""What every aggregation strategy provides to the streaming aggregator.

Two kinds exist. A coordinate-wise strategy (FedAvg, median, trimmed mean) combines each
chunk on its own, in one pass. A two-pass rule (Multi-Krum, norm bounding, centered
clipping, geometric median, median of means) needs whole-update statistics: the first pass
reduces every bundle to the Gram matrix of the sites' updates against the round's package
(K x K numbers), the rule turns it into one coefficient per site, and the second pass
writes ``package + sum_k c_k (bundle_k - package)``, chunk by chunk.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Strategy(Protocol):
    """Combines K aligned slices of one tensor chunk into one.

    ``combine`` receives float64 copies it may modify, and per-bundle weights (samples times
    any staleness discount).
    """

    name: str

    def params(self) -> dict[str, float]: ...

    def combine(self, slices: list[np.ndarray], weights: np.ndarray, /) -> np.ndarray: ...


class TwoPassRule(Protocol):
    """Turns the Gram matrix of K updates (and their weights) into K coefficients."""

    name: str

    def params(self) -> dict[str, float]: ...

    def min_sites(self) -> int:
        """Fewest accepted bundles the rule is defined for."""
        ...

    def coefficients(self, gram: np.ndarray, weights: np.ndarray, /) -> np.ndarray: ...


Rule = Strategy | TwoPassRule


def is_two_pass(rule: Rule) -> bool:
    return hasattr(rule, "coefficients")
