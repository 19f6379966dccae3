"""Coordinate-wise median, robust to a minority of broken or hostile sites.

Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018.
"""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.math import coordinate_median


class Median:
    name = "median"

    def params(self) -> dict[str, float]:
        return {}

    def combine(self, slices: list[np.ndarray], _weights: np.ndarray) -> np.ndarray:
        return coordinate_median(slices)
