"""The results scripts' shared tuning protocol: one grid, a validation split, mean ± sd.

Every arm of every results table takes its site plan (learning rate, batch size, and local
epochs where the arm leaves them free) from the same grid, ``LRS`` x ``BATCHES`` (x
``EPOCHS``), chosen by accuracy on a validation split held out from the sites' training
data of a tuning seed (never the test set). Server-side settings (a server optimizer's
learning rate, FedProx's mu) are then chosen the same way with the arm's chosen site plan.
One test split (``TEST_SEED``, fixed, independent of ``--seeds`` and ``--tune-seed``) is held
out of every seed, the tuning seed included: a seed varies only the site partition, the
validation hold-out within site data, the pretraining share where there is one, and the
training randomness, all drawn from the examples outside that test split.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from flsilo.plans.plan import Plan
from sim_kit.partition import train_test_split
from sim_kit.simulate import SimData
from site_kit.data import Dataset

LRS = (0.01, 0.03, 0.1)
BATCHES = (10, 32)
EPOCHS = (1, 5)  # only where an arm's local epochs are free (rounds to a target)
SERVER_LRS = {"fedavgm": (0.5, 1.0), "fedadam": (0.01, 0.03, 0.1), "fedyogi": (0.01, 0.03, 0.1)}
FEDPROX_MUS = (0.01, 0.1)
VAL_FRACTION = 0.2
TEST_SEED = 2026  # seeds the one test split every seed holds out (SimSettings.test_seed)

T = TypeVar("T")


@dataclass(frozen=True)
class SitePlan:
    """One point of the grid."""

    lr: float
    batch_size: int
    local_epochs: int | None = None

    def apply(self, plan: Plan) -> Plan:
        plan = replace(plan, lr=self.lr, batch_size=self.batch_size)
        return plan if self.local_epochs is None else replace(plan, local_epochs=self.local_epochs)

    def __str__(self) -> str:
        e = "" if self.local_epochs is None else f"E={self.local_epochs} "
        return f"{e}B={self.batch_size} lr={self.lr:g}"


def grid(free_epochs: bool = False) -> list[SitePlan]:
    epochs: Sequence[int | None] = EPOCHS if free_epochs else (None,)
    return [SitePlan(lr, b, e) for e in epochs for b in BATCHES for lr in LRS]


def validation_split(data: SimData, seed: int, fraction: float = VAL_FRACTION) -> SimData:
    """Each site holds out ``fraction`` of its own training data (stratified); the held-out
    parts, pooled, stand in for the test set while tuning. The test set is not used."""
    keep: list[Dataset] = []
    val_x, val_y = [], []
    for i, site in enumerate(data.sites):
        if len(site) < 10:
            keep.append(site)
            continue
        train_idx, val_idx = train_test_split(site.y, fraction, seed * 1000 + i)
        keep.append(Dataset(site.x[train_idx], site.y[train_idx]))
        val_x.append(site.x[val_idx])
        val_y.append(site.y[val_idx])
    val = Dataset(np.concatenate(val_x), np.concatenate(val_y))
    return replace(data, sites=keep, test=val)


def best(candidates: Iterable[T], score: Callable[[T], float], say: Callable[[str], None]) -> T:
    """The candidate with the highest score (the first in grid order on a tie)."""
    scored = [(c, score(c)) for c in candidates]
    for c, s in scored:
        say(f"#   {c}: {s:.4f}")
    return max(scored, key=lambda cs: cs[1])[0]


def pooled(data: SimData) -> Dataset:
    return Dataset(
        np.concatenate([d.x for d in data.sites]), np.concatenate([d.y for d in data.sites])
    )


def mean_sd(values: Sequence[float], scale: float = 100.0) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.1f} ± {scale * sd:.1f}"


def say(message: str) -> None:
    print(message, flush=True)
