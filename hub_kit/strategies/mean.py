"""Unweighted mean: every accepted site counts the same, whatever its sample count."""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.math import weighted_mean


class Mean:
    name = "mean"

    def params(self) -> dict[str, float]:
        return {}

    def combine(self, slices: list[np.ndarray], _weights: np.ndarray) -> np.ndarray:
        return weighted_mean(slices, np.ones(len(slices)))
