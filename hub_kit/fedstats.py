"""Federation statistics: a ``stats`` round's bundles pooled into the plan's normalisation.

Each site ships, per channel (images) or per feature (tables), the count of values it
measured, their sum and sum of squares (float64) and, for tables, the count of missing
values. Summed in site-id order these are exactly the pooled data's, so the mean and
standard deviation below are the centralized ones. They are written into the next
package's plan (``[plan.preprocess]`` ``federation_mean`` / ``federation_std``) and carried
into every later package; ``audit --replay`` recomputes them and compares the plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from flsilo.format import manifest as mf
from flsilo.format.artifact import Verified
from flsilo.format.tensorsets import STATS_COUNT, STATS_MISSING, STATS_SUM, STATS_SUM_SQ
from flsilo.plans.preprocessing import Preprocess
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError
from hub_kit.closed_form import sum_statistics

MIN_STD = 1e-6
"""A feature or channel whose pooled spread is below this is constant: left unscaled (std 1)."""

Normalisation = tuple[tuple[float, ...], tuple[float, ...]]


def pooled_normalisation(per_site: Sequence[dict[str, np.ndarray]]) -> Normalisation:
    """Mean and standard deviation of the pooled values, from per-site sums in site order."""
    total = sum_statistics(list(per_site))
    count = total[STATS_COUNT]
    seen = count > 0
    mean = np.zeros_like(count)
    mean[seen] = total[STATS_SUM][seen] / count[seen]
    var = np.zeros_like(count)
    var[seen] = total[STATS_SUM_SQ][seen] / count[seen] - mean[seen] * mean[seen]
    std = np.sqrt(np.maximum(var, 0.0))
    std[std < MIN_STD] = 1.0
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def with_normalisation(plan: mf.Plan, stats: Normalisation) -> mf.Plan:
    """``plan`` with the federation's statistics in its ``[plan.preprocess]``."""
    mean, std = stats
    pre = dataclasses.replace(plan.preprocess, federation_mean=mean, federation_std=std)
    return dataclasses.replace(plan, preprocess=pre)


def carried(plan: mf.Plan | None) -> Normalisation | None:
    """The statistics a package's plan already holds (from an earlier stats round), if any."""
    return held(plan.preprocess if plan is not None else None)


def held(pre: Preprocess | None) -> Normalisation | None:
    """The federation statistics a ``[plan.preprocess]`` holds, if any."""
    if pre is None or not pre.federation_mean:
        return None
    return pre.federation_mean, pre.federation_std


def check_fedstats(
    verified: Verified,
    plan: mf.Plan,
    input_shape: tuple[int, ...],
    tensors: Mapping[str, bytes],
    refuse: Callable[[Code, str, str], PolicyError],
) -> None:
    """Counts are whole and add up to the samples the bundle claims; the minimum cell size.

    ``tensors``: the stored bytes of the bundle's count and missing tensors (read by the
    intake; nothing is read here)."""
    count, missing = (np.frombuffer(tensors[n], "<f8") for n in (STATS_COUNT, STATS_MISSING))
    b = verified.manifest.bundle
    assert b is not None
    per_sample = math.prod(input_shape[1:]) if len(input_shape) == 3 else 1
    whole = np.all(count >= 0) and np.all(missing >= 0) and np.all(count == np.round(count))
    if not whole or np.any(count + missing != b.num_samples * per_sample):
        raise refuse(
            Code.BAD_STATISTICS,
            f"input statistics do not add up to the {b.num_samples} samples the bundle claims",
            "the bundle was not made by 'flsilo train'; ask the site to run it again",
        )
    if 0 < b.num_samples < plan.min_cell_size:
        raise refuse(
            Code.CELL_TOO_SMALL,
            f"bundle reveals statistics of {b.num_samples} samples; the plan's minimum is "
            f"{plan.min_cell_size}",
            "the site should have refused this round; discard the bundle",
        )
