"""Norm bounding: scale every update down to norm at most C, then take the weighted mean.

Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated Learning?", 2019.
"""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.robust import clip_scale, normalised


class NormBound:
    name = "norm-bound"

    def __init__(self, c: float) -> None:
        self.c = c

    def params(self) -> dict[str, float]:
        return {"c": self.c}

    def min_sites(self) -> int:
        return 1

    def coefficients(self, gram: np.ndarray, weights: np.ndarray) -> np.ndarray:
        norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
        return normalised(weights) * clip_scale(norms, self.c)
