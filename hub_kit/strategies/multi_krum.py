"""Multi-Krum: average the M updates closest to their K - F - 2 nearest neighbours.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017. Tolerates F Byzantine sites when K >= 2F + 3.
The selected updates are averaged with their weights; ties in the score go to the earlier
input (ordered by site id, then sha256).
"""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.robust import krum_scores, normalised


class MultiKrum:
    name = "multi-krum"

    def __init__(self, f: int, m: int | None = None) -> None:
        self.f = f
        self.m = m

    def params(self) -> dict[str, float]:
        out: dict[str, float] = {"f": self.f}
        if self.m is not None:
            out["m"] = self.m
        return out

    def min_sites(self) -> int:
        return max(2 * self.f + 3, self.m or 0)

    def coefficients(self, gram: np.ndarray, weights: np.ndarray) -> np.ndarray:
        k = len(gram)
        keep = self.m if self.m is not None else k - self.f
        scores = krum_scores(gram, self.f)
        chosen = sorted(range(k), key=lambda i: (scores[i], i))[:keep]
        mask = np.zeros(k)
        mask[chosen] = 1.0
        return normalised(weights * mask)
