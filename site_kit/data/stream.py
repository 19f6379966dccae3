"""Batches of decoded samples: a ``torch.utils.data.DataLoader`` with worker processes.

Training, validation, evaluation, statistics and Fisher rounds all read their batches here.
The caller fixes every batch's records (a seeded order, or index order); workers only decode
and preprocess, and the loader hands batches back in that order, so the batches, and the
bundle trained on them, are the same whatever the number of workers. A training sample's
augmentation is drawn from ``sample_rng(round seed, record index, epoch)``, never from a
worker's own state.

Workers: ``--workers N`` processes decode while the main process trains; 0 decodes in the
main process. The default, ``default_workers()``, is min(2, cores - 1): one core is left to
the main process, whose torch operations use ``flsilo --threads`` threads (``flsilo.runtime.cpu``),
and each worker runs one thread (the DataLoader's rule). The main process's thread count
does not depend on ``--workers``, so neither does the arithmetic.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from flsilo.plans.plan import CLASSIFY
from flsilo.runtime import signals
from flsilo.runtime.codes import Code
from flsilo.runtime.cpu import cpu_budget
from flsilo.runtime.errors import WorkspaceError
from flsilo.tasks import Task, load_task
from site_kit.data import Dataset
from site_kit.data.samples import Samples
from site_kit.preprocess import sample_rng

T = TypeVar("T")

PREFETCH = 2
"""Batches each worker decodes ahead: memory is workers x PREFETCH batches, not the data."""


def default_workers() -> int:
    """min(2, cores - 1): decoding overlaps training, one core stays with the main process.

    Cores: the CPUs this process may use (affinity, bounded by a cgroup quota).
    """
    return max(0, min(2, cpu_budget() - 1))


class SampleSet(torch.utils.data.Dataset[tuple[torch.Tensor, Any]]):
    """Map-style dataset whose keys are (epoch, k): sample k, augmented for that epoch, and
    its target (a class index, or the array the plan's task decodes)."""

    def __init__(self, samples: Samples, seed: int | None) -> None:
        self.samples = samples
        self.seed = seed if samples.preprocessor.augment.active else None
        self.targets = samples.y
        self.classify = samples.ctx.is_classify

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, Any]:
        epoch, k = key
        rng = None
        if self.seed is not None:
            rng = sample_rng(self.seed, self.samples.record_id(k), epoch)
        if self.classify or self.samples.is_table:
            x = torch.from_numpy(self.samples.sample(k, rng))
            return x, int(self.targets[k]) if self.classify else self.samples.target(k)
        pixels, flipped = self.samples.sample_flipped(k, rng)  # boxes follow a flip
        return torch.from_numpy(pixels), self.samples.target(k, flipped)


class _Batches(torch.utils.data.Sampler[list[tuple[int, int]]]):
    def __init__(self, batches: Sequence[Sequence[int]] | Iterable[Sequence[int]], epoch: int):
        self.batches = batches
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            yield [(self.epoch, int(k)) for k in batch]


class _Collate:
    """Stack a batch; an empty batch (Poisson sampling may draw one) keeps the input shape.

    Targets: class indices become an int64 tensor; any other task's targets go through its
    ``collate``."""

    def __init__(self, shape: tuple[int, ...], task: Task | None) -> None:
        self.shape = shape
        self.task = task

    def __call__(self, items: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, Any]:
        if not items:
            empty = self.task.collate([]) if self.task else torch.zeros(0, dtype=torch.int64)
            return torch.zeros((0, *self.shape)), empty
        xs, ys = zip(*items, strict=True)
        if self.task is not None:
            return torch.stack(xs), self.task.collate(list(ys))
        return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def batches(
    data: Dataset | Samples,
    batch_indices: Iterable[Sequence[int]],
    *,
    workers: int = 0,
    epoch: int = 0,
    seed: int | None = None,
    pin: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) CPU tensors for each list of sample positions, in the order given.

    ``seed`` (training) turns on the plan's augmentation, seeded per sample and ``epoch``.
    An in-memory ``Dataset`` (simulations) is indexed directly, without workers.
    """
    if isinstance(data, Dataset):
        yield from _in_memory(data, batch_indices)
        return
    task = None if data.ctx.is_classify else load_task(data.ctx.task.name)
    loader = torch.utils.data.DataLoader(
        SampleSet(data, seed),
        batch_sampler=_Batches(batch_indices, epoch),
        num_workers=workers,
        collate_fn=_Collate(data.ctx.input_shape, task),
        pin_memory=pin,
        prefetch_factor=PREFETCH if workers > 0 else None,
        worker_init_fn=signals.worker_defaults,
        generator=torch.Generator().manual_seed(0),  # leaves the global RNG to dropout
    )
    with _frozen_heap(workers):
        yield from drained(loader, workers)


def _in_memory(
    data: Dataset, batch_indices: Iterable[Sequence[int]]
) -> Iterator[tuple[torch.Tensor, Any]]:
    """Batches of an in-memory data set (its targets collated by its task unless classify)."""
    x_all = torch.from_numpy(data.x)
    task = None if data.task.name == CLASSIFY else load_task(data.task.name)
    y_all = torch.from_numpy(data.y) if task is None else None
    for batch in batch_indices:
        index = np.asarray(batch, dtype=np.int64)
        rows = torch.as_tensor(index)
        if y_all is not None:
            yield x_all[rows], y_all[rows]
        else:
            assert task is not None
            yield x_all[rows], task.collate([data.y[i] for i in index.tolist()])


@contextlib.contextmanager
def _frozen_heap(workers: int) -> Iterator[None]:
    """Keep forked workers from copying the parent's heap while they run.

    A worker's garbage collector would otherwise walk every object it inherited, writing
    to each one's header, so page by page it would come to hold a private copy of the
    main process's Python heap (about 50 MiB, growing over an epoch). ``gc.freeze`` moves
    the objects that exist at fork time out of the collector's reach (Python's advice for
    forking servers); they return to it when the loader is done. Only the young
    generations are collected first (their garbage is most of what there is to free): a
    full pass walks the whole heap, which in a long-lived process holding many modules
    (a test run) costs a fifth of a second per loader, and gc.freeze does not need it.
    """
    if workers == 0:
        yield
        return
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def in_order(n: int, batch_size: int) -> Iterator[range]:
    """Positions 0..n-1 in batches of ``batch_size`` (evaluation, statistics, Fisher)."""
    for start in range(0, n, batch_size):
        yield range(start, min(start + batch_size, n))


class _Scaled(torch.utils.data.Dataset[np.ndarray]):
    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.samples.scaled(k)


def _stack(items: list[np.ndarray]) -> np.ndarray:
    return np.stack(items)


def scaled_batches(samples: Samples, workers: int, batch_size: int = 64) -> Iterator[np.ndarray]:
    """Every sample scaled and resized (no augmentation, no normalisation), in order."""
    loader = torch.utils.data.DataLoader(
        _Scaled(samples),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_stack,
        prefetch_factor=PREFETCH if workers > 0 else None,
        worker_init_fn=signals.worker_defaults,
        generator=torch.Generator().manual_seed(0),
    )
    yield from drained(loader, workers)


CRASHES = re.compile(r"killed by signal: (Segmentation fault|Aborted|Illegal instruction)")
"""torch's words for a worker that crashed (a decoder's fault), not one that was killed."""


def drained(loader: Iterable[T], workers: int) -> Iterator[T]:
    """``loader``'s batches; a worker process that died (the out-of-memory killer's SIGKILL,
    a signal sent to it alone) is said as ``worker-died``, not as torch's RuntimeError."""
    try:
        yield from loader
    except RuntimeError as exc:
        if workers == 0 or not str(exc).startswith("DataLoader worker"):
            raise
        hint = None  # the code's: rerun; fewer --workers if memory runs short
        if CRASHES.search(str(exc)):  # not the out-of-memory killer's SIGKILL
            hint = (
                "the worker crashed, it was not short of memory (fewer --workers will not "
                "help): rerun the same command to resume; if it recurs, a damaged file or a "
                "decoding library is at fault: report it with the data format in use"
            )
        raise WorkspaceError(
            f"a data-loading worker died: {exc}", code=Code.WORKER_DIED, hint=hint
        ) from exc
