"""Geometric median of the updates (robust federated aggregation, RFA).

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning", IEEE Trans.
Signal Processing 2022: smoothed Weiszfeld iterations (nu = 1e-6, at most 100), weighted by
the sites' weights.
"""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.robust import weiszfeld

ITERATIONS = 100
NU = 1e-6


class GeoMedian:
    name = "geomedian"

    def params(self) -> dict[str, float]:
        return {"iterations": ITERATIONS, "nu": NU}

    def min_sites(self) -> int:
        return 1

    def coefficients(self, gram: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return weiszfeld(gram, weights, nu=NU, iterations=ITERATIONS)
