"""FedAvg: sample-weighted average of site models.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017.
"""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.math import weighted_mean


class FedAvg:
    name = "fedavg"

    def params(self) -> dict[str, float]:
        return {}

    def combine(self, slices: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
        return weighted_mean(slices, weights)
