"""Coordinate-wise trimmed mean: drop the BETA fraction of extremes on each side.

Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018.
"""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.math import trimmed_mean


class TrimmedMean:
    name = "trimmed-mean"

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def params(self) -> dict[str, float]:
        return {"beta": self.beta}

    def combine(self, slices: list[np.ndarray], _weights: np.ndarray) -> np.ndarray:
        return trimmed_mean(slices, self.beta)
