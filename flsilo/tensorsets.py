"""Which tensors a bundle carries: the whole model, its trainable part, or head statistics.

A plan may freeze parameters by glob (``stem.*,stages.*``): sites train the rest, and a
*partial bundle* carries only those trainable tensors. A *statistics round* (closed-form
head) asks instead for sufficient statistics of the features that feed the model's head.
Hub and site both derive the expected tensor set from the signed package alone, with no
torch, so the hub checks a bundle's tensor set against the plan before trusting it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from flsilo.tensorfile import Header, TensorInfo, build_header

ROUND_TRAIN = "train"
ROUND_STATISTICS = "statistics"
ROUND_FEDSTATS = "stats"
"""A federation-statistics round: input counts, sums, sums of squares (``[plan.preprocess]``)."""
ROUND_KINDS = (ROUND_TRAIN, ROUND_STATISTICS, ROUND_FEDSTATS)

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
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes a bundle answering this package's plan must carry.

    ``stats_width``: channels (images) or raw features (tables) of a federation-statistics
    round (``flsilo.preprocessing.stats_width``).
    """
    if kind == ROUND_FEDSTATS:
        return fedstats_specs(stats_width)
    if kind == ROUND_STATISTICS:
        classes, features = head_shape(package_header, head)
        return statistics_specs(solver, features, classes)
    all_specs = {t.name: (t.dtype, t.shape) for t in package_header.tensors}
    frozen = frozen_names(all_specs, freeze)
    return {n: s for n, s in all_specs.items() if n not in frozen}


def layout_of(specs: Mapping[str, tuple[str, tuple[int, ...]]]) -> list[TensorInfo]:
    """The canonical data layout of these tensors (the one every flsilo writer uses)."""
    return build_header(specs, {})[1]
