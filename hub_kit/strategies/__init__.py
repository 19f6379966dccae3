"""Aggregation strategies, one per module, chosen by name (``fedavg``, ``multi-krum:1``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from hub_kit.strategies.base import Rule
from hub_kit.strategies.centered_clip import CenteredClip
from hub_kit.strategies.fedavg import FedAvg
from hub_kit.strategies.geomedian import GeoMedian
from hub_kit.strategies.mean import Mean
from hub_kit.strategies.median import Median
from hub_kit.strategies.median_of_means import MedianOfMeans
from hub_kit.strategies.multi_krum import MultiKrum
from hub_kit.strategies.norm_bound import NormBound
from hub_kit.strategies.trimmed_mean import TrimmedMean

NAMES = (
    "fedavg",
    "mean",
    "median",
    "trimmed-mean:BETA",
    "multi-krum:F[,M]",
    "norm-bound:C",
    "centered-clip:TAU",
    "geomedian",
    "median-of-means:G",
)
RANGES = "0 <= BETA < 0.5, F >= 0, M >= 1, C > 0, TAU > 0, G >= 1"


def _numbers(arg: str, count: tuple[int, int]) -> list[float]:
    parts = arg.split(",") if arg else []
    if not count[0] <= len(parts) <= count[1]:
        raise ValueError(arg)
    return [float(p) for p in parts]


def _whole(value: float, least: int) -> int:
    if value != int(value) or value < least:
        raise ValueError(value)
    return int(value)


def _positive(value: float) -> float:
    if not 0 < value < float("inf"):
        raise ValueError(value)
    return value


def _beta(value: float) -> float:
    if not 0 <= value < 0.5:
        raise ValueError(value)
    return value


def _krum(v: list[float]) -> Rule:
    return MultiKrum(_whole(v[0], 0), _whole(v[1], 1) if len(v) > 1 else None)


_PARSERS: dict[str, tuple[tuple[int, int], Callable[[list[float]], Rule]]] = {
    "fedavg": ((0, 0), lambda _v: FedAvg()),
    "mean": ((0, 0), lambda _v: Mean()),
    "median": ((0, 0), lambda _v: Median()),
    "geomedian": ((0, 0), lambda _v: GeoMedian()),
    "trimmed-mean": ((1, 1), lambda v: TrimmedMean(_beta(v[0]))),
    "multi-krum": ((1, 2), _krum),
    "norm-bound": ((1, 1), lambda v: NormBound(_positive(v[0]))),
    "centered-clip": ((1, 1), lambda v: CenteredClip(_positive(v[0]))),
    "median-of-means": ((1, 1), lambda v: MedianOfMeans(_whole(v[0], 1))),
}

# Which recorded parameters make up the command-line argument, in order.
_ARGUMENTS = {
    "trimmed-mean": ("beta",),
    "multi-krum": ("f", "m"),
    "norm-bound": ("c",),
    "centered-clip": ("tau",),
    "median-of-means": ("groups",),
}


def parse_strategy(text: str) -> Rule:
    name, _, arg = text.partition(":")
    if name in _PARSERS:
        count, build = _PARSERS[name]
        try:
            return build(_numbers(arg, count))
        except (ValueError, OverflowError):
            pass
    raise UsageError(
        f"strategy {text!r} is not known",
        code=Code.BAD_STRATEGY,
        hint=f"use one of {', '.join(NAMES)} ({RANGES})",
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def rule_text(name: str, params: Mapping[str, float]) -> str:
    """The ``--strategy`` text for a recorded name and parameters (inverse of parsing)."""
    args = [_num(params[p]) for p in _ARGUMENTS.get(name, ()) if p in params]
    if name == "trimmed-mean":
        args = [repr(float(params["beta"]))]
    return f"{name}:{','.join(args)}" if args else name


def strategy_text(strategy: Rule) -> str:
    return rule_text(strategy.name, strategy.params())


def from_provenance(name: str, params: Mapping[str, float]) -> Rule:
    """Rebuild the rule a package records (its name and parameters), for replay."""
    return parse_strategy(rule_text(name, params))
