"""Median of means: geometric median of G group means (Byzantine gradient descent).

Chen, Su, Xu, "Distributed Statistical Machine Learning in Adversarial Settings: Byzantine
Gradient Descent", POMACS 2017. Groups are fixed, consecutive blocks of the inputs ordered
by site id then sha256, so the same bundles always form the same groups; each group mean is
weighted, the median over groups is not.
"""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.geomedian import ITERATIONS, NU
from hub_kit.strategies.robust import group_matrix, project_gram, weiszfeld


class MedianOfMeans:
    name = "median-of-means"

    def __init__(self, groups: int) -> None:
        self.groups = groups

    def params(self) -> dict[str, float]:
        return {"groups": self.groups}

    def min_sites(self) -> int:
        return self.groups

    def coefficients(self, gram: np.ndarray, weights: np.ndarray) -> np.ndarray:
        a = group_matrix(len(gram), self.groups, weights)
        b = weiszfeld(project_gram(gram, a), np.ones(self.groups), nu=NU, iterations=ITERATIONS)
        return np.array([float(np.add.reduce(b * a[:, k])) for k in range(len(gram))])
