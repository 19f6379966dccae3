"""Which tensors a bundle carries: the whole model, its trainable part, or head statistics.

A plan may freeze parameters by glob (``stem.*,stages.*``): sites train the rest, and a
*partial bundle* carries only those trainable tensors. A *statistics round* (closed-form
head) asks instead for sufficient statistics of the features that feed the model's head.
Hub and site both derive the expected tensor set from the signed package alone, with no
torch, so the hub checks a bundle's tensor set against the plan before trusting it.

*Low-rank adapters* (``--adapters lora:r=R[,alpha=A,targets=GLOBS]``, FFA-LoRA): the package
carries, beside each targeted layer's weight, a fixed ``NAME.lora_A.weight`` (drawn once at
``hub init``) and a zero-initialised ``NAME.lora_B.weight``; only the B matrices and the head
train, so a bundle carries exactly those (``flsilo.models.adapters`` applies and merges them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

from flsilo.format.tensorfile import Header, TensorInfo, build_header


class RoundKind(StrEnum):
    """What a round asks of the sites (the plan's ``kind``, set per round by the schedule)."""

    TRAIN = "train"
    """Weights: the sites train and send their models (or the trainable part)."""
    STATISTICS = "statistics"
    """Head statistics for a closed-form head: Gram matrix, class sums and counts."""
    FEDSTATS = "stats"
    """A federation-statistics round: input counts, sums, sums of squares (``[plan.preprocess]``)."""


ROUND_TRAIN = RoundKind.TRAIN
ROUND_STATISTICS = RoundKind.STATISTICS
ROUND_FEDSTATS = RoundKind.FEDSTATS

STAT_GRAM = "statistics.gram"
STAT_CLASS_SUMS = "statistics.class_sums"
STAT_CLASS_COUNTS = "statistics.class_counts"

STATS_COUNT = "stats.count"
STATS_SUM = "stats.sum"
STATS_SUM_SQ = "stats.sum_sq"
STATS_MISSING = "stats.missing"
FEDSTATS = (STATS_COUNT, STATS_MISSING, STATS_SUM, STATS_SUM_SQ)

SOLVER_RIDGE = "ridge"
SOLVER_NCM = "ncm"
DEFAULT_RIDGE_LAMBDA = 1.0

REVEALS = {
    STAT_CLASS_COUNTS: "class counts",
    STAT_CLASS_SUMS: "per-class sums of head features (class means)",
    STAT_GRAM: "Gram matrix of head features (second moments)",
    STATS_COUNT: "per-channel (or per-feature) count of input values",
    STATS_MISSING: "per-feature count of missing values",
    STATS_SUM: "per-channel (or per-feature) sum of input values (the mean)",
    STATS_SUM_SQ: "per-channel (or per-feature) sum of squared input values (the spread)",
}


def parse_solver(text: str) -> tuple[str, float]:
    """``ridge[:LAMBDA]`` or ``ncm`` -> (name, lambda); raises ValueError with the reason."""
    name, sep, arg = text.partition(":")
    if name == SOLVER_NCM and not sep:
        return SOLVER_NCM, 0.0
    if name == SOLVER_RIDGE:
        lam = float(arg) if sep else DEFAULT_RIDGE_LAMBDA
        if not lam > 0 or lam == float("inf"):
            raise ValueError("ridge LAMBDA must be a positive number")
        return SOLVER_RIDGE, lam
    raise ValueError(f"head solver {text!r} is not ridge[:LAMBDA] or ncm")


LORA = "lora"
LORA_A = ".lora_A.weight"
LORA_B = ".lora_B.weight"
ADAPTER_KINDS = (LORA,)


@dataclass(frozen=True)
class AdapterSpec:
    """A parsed ``--adapters`` value: ``lora:r=R[,alpha=A,targets=GLOB,GLOB...]``.

    ``targets`` empty: every linear layer and 1x1 convolution but the head. ``alpha``
    defaults to ``r`` (the update is scaled by alpha / r).
    """

    kind: str
    r: int
    alpha: float
    targets: tuple[str, ...] = ()

    @property
    def scale(self) -> float:
        return self.alpha / self.r


def parse_adapters(text: str) -> AdapterSpec:
    """Parse ``lora:r=R[,alpha=A,targets=GLOBS]``; raises ValueError with the reason.

    Globs after ``targets=`` run to the end, separated by commas: ``targets=*.conv1,fc1``.
    """
    kind, sep, rest = text.partition(":")
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"adapter kind {kind!r} is not one of {', '.join(ADAPTER_KINDS)}")
    values: dict[str, str] = {}
    targets: list[str] = []
    for item in rest.split(",") if sep else []:
        key, eq, value = item.partition("=")
        if targets and not eq:
            targets.append(item.strip())
        elif key == "targets" and eq:
            targets.append(value.strip())
        elif key in ("r", "alpha") and eq and key not in values:
            values[key] = value
        else:
            raise ValueError(f"adapter argument {item!r} is not r=R, alpha=A or targets=GLOBS")
    if "r" not in values:
        raise ValueError("the adapter needs its rank: r=R (e.g. lora:r=8)")
    try:
        r = int(values["r"])
        alpha = float(values.get("alpha", r))
    except ValueError as exc:
        raise ValueError("the rank r must be a whole number and alpha a number") from exc
    if r <= 0 or not 0 < alpha < float("inf"):
        raise ValueError("the rank r and alpha must be positive")
    if any(not g for g in targets):
        raise ValueError("adapter target globs must not be empty")
    return AdapterSpec(kind, r, alpha, tuple(targets))


def is_adapter_b(name: str) -> bool:
    """Whether a tensor is an adapter's trained B matrix (the only adapter tensor that trains)."""
    return name.endswith(LORA_B)


def frozen_tensors(
    names: Iterable[str], freeze: Iterable[str], adapters: str = "", head: Iterable[str] = ()
) -> set[str]:
    """Tensors that never train: the freeze globs' and, with adapters, all but B and the head."""
    listed = tuple(names)
    frozen = frozen_names(listed, freeze)
    if adapters:
        keep = set(head)
        frozen |= {n for n in listed if not is_adapter_b(n) and n not in keep}
    return frozen


def frozen_names(names: Iterable[str], globs: Iterable[str]) -> set[str]:
    """Tensor names matched by any freeze glob (shell-style, case-sensitive)."""
    patterns = tuple(globs)
    return {n for n in names if any(fnmatchcase(n, g) for g in patterns)}


def unmatched_globs(names: Iterable[str], globs: Iterable[str]) -> list[str]:
    """Freeze globs that match no tensor (almost always a typo)."""
    listed = tuple(names)
    return [g for g in globs if not any(fnmatchcase(n, g) for n in listed)]


def statistics_specs(
    solver: str, features: int, classes: int
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors of a statistics bundle, all float64.

    ``class_counts`` (C) and ``class_sums`` (C x d) always; ``gram`` ((d+1) x (d+1), the
    second moments of the features with a constant 1 appended) for the ridge solver only.
    """
    specs: dict[str, tuple[str, tuple[int, ...]]] = {
        STAT_CLASS_COUNTS: ("F64", (classes,)),
        STAT_CLASS_SUMS: ("F64", (classes, features)),
    }
    if parse_solver(solver)[0] == SOLVER_RIDGE:
        specs[STAT_GRAM] = ("F64", (features + 1, features + 1))
    return specs


def fedstats_specs(width: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors of a federation-statistics bundle: four float64 vectors of ``width``."""
    return {name: ("F64", (width,)) for name in FEDSTATS}


def head_shape(package_header: Header, head: Iterable[str]) -> tuple[int, int]:
    """(classes, features) of the head's weight matrix, from the package's header."""
    shapes = {t.name: t.shape for t in package_header.tensors}
    for name in head:
        shape = shapes.get(name)
        if shape is not None and len(shape) == 2:
            return shape[0], shape[1]
    raise ValueError("the package names no 2-D head weight")


def expected_specs(
    package_header: Header,
    head: Iterable[str],
    kind: str,
    freeze: Iterable[str],
    solver: str,
    stats_width: int = 0,
    adapters: str = "",
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes a bundle answering this package's plan must carry.

    ``stats_width``: channels (images) or raw features (tables) of a federation-statistics
    round (``flsilo.plans.preprocessing.stats_width``). ``adapters``: the plan's adapter spec; a
    training round's bundle then carries the adapters' B matrices and the head only.
    """
    if kind == ROUND_FEDSTATS:
        return fedstats_specs(stats_width)
    if kind == ROUND_STATISTICS:
        classes, features = head_shape(package_header, head)
        return statistics_specs(solver, features, classes)
    all_specs = {t.name: (t.dtype, t.shape) for t in package_header.tensors}
    frozen = frozen_tensors(all_specs, freeze, adapters, head)
    return {n: s for n, s in all_specs.items() if n not in frozen}


def layout_of(specs: Mapping[str, tuple[str, tuple[int, ...]]]) -> list[TensorInfo]:
    """The canonical data layout of these tensors (the one every flsilo writer uses)."""
    return build_header(specs, {})[1]
