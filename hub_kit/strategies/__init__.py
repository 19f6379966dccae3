"""Aggregation strategies, one per module, chosen by name (``fedavg``, ``trimmed-mean:0.1``)."""

from __future__ import annotations

from flsilo.errors import UsageError
from hub_kit.strategies.base import Strategy
from hub_kit.strategies.fedavg import FedAvg
from hub_kit.strategies.mean import Mean
from hub_kit.strategies.median import Median
from hub_kit.strategies.trimmed_mean import TrimmedMean

NAMES = ("fedavg", "mean", "median", "trimmed-mean:BETA")


def parse_strategy(text: str) -> Strategy:
    name, _, arg = text.partition(":")
    if name == "fedavg" and not arg:
        return FedAvg()
    if name == "mean" and not arg:
        return Mean()
    if name == "median" and not arg:
        return Median()
    if name == "trimmed-mean":
        try:
            beta = float(arg)
        except ValueError:
            beta = -1.0
        if 0 <= beta < 0.5:
            return TrimmedMean(beta)
    raise UsageError(
        f"strategy {text!r} is not known",
        code="bad-strategy",
        hint=f"use one of {', '.join(NAMES)} (0 <= BETA < 0.5)",
    )


def strategy_text(strategy: Strategy) -> str:
    beta = strategy.params().get("beta")
    return f"{strategy.name}:{beta}" if beta is not None else strategy.name
