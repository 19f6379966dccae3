"""Centered clipping: move from the round's package by clipped steps towards every update.

Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust Optimization", ICML
2021. ``v <- v + sum_k w_k min(1, TAU / ||u_k - v||) (u_k - v)``, started at the round's
package (v = 0), a fixed number of iterations (3).
"""

from __future__ import annotations

import numpy as np

from hub_kit.strategies.robust import centered_clip

ITERATIONS = 3


class CenteredClip:
    name = "centered-clip"

    def __init__(self, tau: float, iterations: int = ITERATIONS) -> None:
        self.tau = tau
        self.iterations = iterations

    def params(self) -> dict[str, float]:
        return {"tau": self.tau, "iterations": self.iterations}

    def min_sites(self) -> int:
        return 1

    def coefficients(self, gram: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return centered_clip(gram, weights, self.tau, self.iterations)
