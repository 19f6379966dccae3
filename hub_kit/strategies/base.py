"""What every aggregation strategy provides to the streaming aggregator."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Strategy(Protocol):
    """Combines K aligned slices of one tensor chunk into one.

    ``combine`` receives float64 copies it may modify, and per-bundle weights (samples times
    any staleness discount). A server optimizer (FedAdam, FedYogi) or Krum would be a new
    module implementing this protocol; the aggregator needs no change.
    """

    name: str

    def params(self) -> dict[str, float]: ...

    def combine(self, slices: list[np.ndarray], weights: np.ndarray) -> np.ndarray: ...
