"""A statistics round at a site: sufficient statistics of the features that feed the head.

Every sample counts (no validation hold-out, no augmentation), features come from the
package's frozen model in eval mode, and sums are float64, so the hub's sum over sites equals
the statistics of the pooled data. What the bundle reveals is listed in its manifest, and a
site refuses when a class has fewer samples than the plan's minimum cell size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from flsilo.format.manifest import Plan
from flsilo.format.tensorfile import RawTensor
from flsilo.format.tensorsets import (
    REVEALS,
    STAT_CLASS_COUNTS,
    STAT_CLASS_SUMS,
    STAT_GRAM,
    statistics_specs,
)
from flsilo.models.registry import head_features
from flsilo.plans.plan import CLASSIFY
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError
from flsilo.tasks import load_task
from site_kit.data import Dataset
from site_kit.data.samples import Samples
from site_kit.data.stream import batches, in_order

BATCH = 256
CHUNK = 8192


@torch.no_grad()
def streamed_statistics(
    model: torch.nn.Module,
    data: Dataset | Samples,
    classes: int,
    solver: str,
    device: torch.device,
    workers: int = 0,
) -> dict[str, np.ndarray]:
    """``head_statistics`` of every sample, summed over chunks of ``CHUNK`` samples.

    Memory stays at one chunk's features whatever the number of samples; data of at most
    ``CHUNK`` samples gives exactly ``head_statistics`` of all its features at once.
    """
    model.to(device).eval()
    total: dict[str, np.ndarray] = {}
    labels = data.y
    multi = target_rows(data, classes)
    for start in range(0, len(data), CHUNK):
        stop = min(start + CHUNK, len(data))
        parts = []
        for x, _ in batches(data, _shifted(in_order(stop - start, BATCH), start), workers=workers):
            parts.append(head_features(model, x.to(device)).to("cpu", torch.float64).numpy())
        rows = None if multi is None else multi[start:stop]
        chunk = head_statistics(np.concatenate(parts), labels[start:stop], classes, solver, rows)
        for name, value in chunk.items():
            total[name] = total[name] + value if name in total else value
    return total


def _shifted(batches_: Iterator[range], by: int) -> Iterator[range]:
    return (range(b.start + by, b.stop + by) for b in batches_)


def target_rows(data: Dataset | Samples, classes: int) -> np.ndarray | None:
    """Every sample's (n, classes) target matrix for tasks that are not classify (multilabel:
    multi-hot), from the task; None for classify (``head_statistics`` one-hot encodes)."""
    spec = data.task if isinstance(data, Dataset) else data.ctx.task
    if spec.name == CLASSIFY:
        return None
    y = data.y if isinstance(data, Dataset) else data.targets()
    return load_task(spec.name).target_matrix(y, classes)


def head_statistics(
    features: np.ndarray,
    labels: np.ndarray,
    classes: int,
    solver: str,
    targets: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Class counts, per-class feature sums, and (ridge) the Gram matrix of [features, 1].

    ``targets`` (n x classes) replaces the one-hot rows of ``labels`` (multi-hot findings):
    the counts are then positives per finding and the sums the positives' feature sums."""
    n, d = features.shape
    specs = statistics_specs(solver, d, classes)
    if targets is not None:
        onehot = np.asarray(targets, dtype=np.float64)
    else:
        onehot = np.zeros((n, classes))
        onehot[np.arange(n), labels] = 1.0
    stats = {
        STAT_CLASS_COUNTS: onehot.sum(axis=0),
        STAT_CLASS_SUMS: onehot.T @ features,
    }
    if STAT_GRAM in specs:
        augmented = np.concatenate([features, np.ones((n, 1))], axis=1)
        stats[STAT_GRAM] = augmented.T @ augmented
    return stats


def check_cell_size(counts: np.ndarray, plan: Plan, classes: tuple[str, ...], source: Path) -> None:
    """Refuse to reveal a class held by fewer than ``plan.min_cell_size`` samples (but some)."""
    small = [(classes[i], int(c)) for i, c in enumerate(counts) if 0 < c < plan.min_cell_size]
    if small:
        name, count = small[0]
        raise PolicyError(
            f"this site holds {count} samples of class {name!r}; the plan's minimum cell size "
            f"is {plan.min_cell_size}, so its statistics would reveal too little a group",
            path=source,
            code=Code.CELL_TOO_SMALL,
            hint="do not send a bundle for this round (tell the hub), or add data for that class",
        )


def statistics_tensors(stats: dict[str, np.ndarray]) -> dict[str, RawTensor]:
    return {name: RawTensor.from_numpy(np.ascontiguousarray(v), "F64") for name, v in stats.items()}


def reveals(stats: dict[str, np.ndarray]) -> tuple[str, ...]:
    return tuple(REVEALS[name] for name in sorted(stats))
