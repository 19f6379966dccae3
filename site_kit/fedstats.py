"""A ``stats`` round at a site: per-channel or per-feature counts, sums and sums of squares.

The hub pools these into the federation's normalisation (``hub_kit.fedstats``). Every
sample counts (no validation hold-out), never augmented: images after the plan's intensity
scaling, channels and resize and before any normalisation; table rows as read, a missing
value counted as missing (never imputed). Sums are float64 and accumulated one sample at a
time in index order, so the bundle does not depend on how the data was read. A site refuses
when it holds fewer samples than the plan's minimum cell size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flsilo.format.manifest import Plan
from flsilo.format.tensorsets import STATS_COUNT, STATS_MISSING, STATS_SUM, STATS_SUM_SQ
from flsilo.plans.preprocessing import stats_width
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError


def _values(data: Any) -> Iterator[np.ndarray]:
    """Each sample's values to measure, in order: a C x H x W image or a raw table row."""
    if hasattr(data, "scaled"):  # indexed samples, decoded one at a time
        for k in range(len(data)):
            if getattr(data, "values", None) is not None:
                yield data.values[data.record_id(k)]
            else:
                yield data.scaled(k)
        return
    yield from data.x  # arrays in memory


def input_statistics(
    data: Any, plan: Plan, input_shape: tuple[int, ...], source: Path
) -> dict[str, np.ndarray]:
    """The four float64 vectors of a stats bundle for ``data`` (samples or a dataset)."""
    n = len(data)
    if 0 < n < plan.min_cell_size:
        raise PolicyError(
            f"this site holds {n} samples; the plan's minimum cell size is "
            f"{plan.min_cell_size}, so its statistics would reveal too little a group",
            path=source,
            code=Code.CELL_TOO_SMALL,
            hint="do not send a bundle for this round (tell the hub), or add data",
        )
    width = stats_width(plan.preprocess, input_shape)
    image = len(input_shape) == 3
    count, missing, total, squares = (np.zeros(width) for _ in range(4))
    for x in _values(data):
        values = np.asarray(x, dtype=np.float64)
        if image:
            flat = values.reshape(width, -1)
            count += flat.shape[1]
            total += flat.sum(axis=1)
            squares += (flat * flat).sum(axis=1)
            continue
        row = values.reshape(-1)[:width]
        absent = np.isnan(row)
        seen = np.where(absent, 0.0, row)
        count += ~absent
        missing += absent
        total += seen
        squares += seen * seen
    return {STATS_COUNT: count, STATS_MISSING: missing, STATS_SUM: total, STATS_SUM_SQ: squares}
