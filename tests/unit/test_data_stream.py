"""Batches from the DataLoader: fixed order, per-sample augmentation, workers change nothing."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flsilo.plans.federation import DataSpec
from flsilo.plans.preprocessing import Augment, Preprocess
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import WorkspaceError
from site_kit.data import Dataset
from site_kit.data.samples import open_samples
from site_kit.data.stream import SampleSet, batches, default_workers, in_order
from site_kit.preprocess import build


def _samples(tmp_path: Path, augment: Augment | None = None):
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        (tmp_path / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (9, 7, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    samples = open_samples(tmp_path, None, ("a", "b"), (3, 8, 8), DataSpec())
    if augment is not None:
        samples.preprocessor = build(Preprocess(), (3, 8, 8), augment)
    return samples


def _all(data, order, **kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(batches(data, order, **kw))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )


def test_worker_count_changes_no_batch_and_augmentation_is_per_sample_and_epoch(
    tmp_path: Path,
) -> None:
    samples = _samples(tmp_path, Augment(hflip=True, crop=0.6, rotate=15, jitter=0.3, noise=0.05))
    order = [[7, 2, 9], [0, 5], [3, 1, 8, 4, 6]]
    runs = [_all(samples, order, workers=w, epoch=1, seed=11) for w in (0, 1, 2)]
    assert _same(runs[0], runs[1]) and _same(runs[0], runs[2])
    assert [b[1].tolist() for b in runs[0]] == [[1, 0, 1], [0, 1], [0, 0, 1, 0, 1]]
    # a sample's augmentation depends on its record and the epoch, not on its batch
    alone = _all(samples, [[2]], epoch=1, seed=11)
    assert torch.equal(alone[0][0][0], runs[0][0][0][1])
    assert not _same(runs[0], _all(samples, order, epoch=2, seed=11))
    # without a seed (validation, evaluation, statistics) nothing is augmented
    plain = _all(samples, [[2]])
    assert torch.equal(plain[0][0][0], torch.from_numpy(samples.sample(2)))
    assert not torch.equal(plain[0][0][0], alone[0][0][0])


def test_in_order_batches_and_an_empty_batch_keep_the_shape(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    got = _all(samples, in_order(len(samples), 4), workers=1)
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in got]), torch.from_numpy(samples.y))
    (empty,) = _all(samples, [[]])
    assert empty[0].shape == (0, 3, 8, 8) and empty[1].shape == (0,)


def test_an_in_memory_dataset_is_indexed_directly() -> None:
    data = Dataset(np.arange(24, dtype=np.float32).reshape(6, 4), np.arange(6) % 2)
    ((x, y),) = _all(data, [[4, 1]])
    assert x.tolist() == [[16, 17, 18, 19], [4, 5, 6, 7]] and y.tolist() == [0, 1]


@pytest.mark.default_workers
def test_default_workers_leave_a_core_to_the_main_process() -> None:
    assert 0 <= default_workers() <= 2


def test_a_worker_killed_mid_run_is_worker_died_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The out-of-memory killer takes a worker (SIGKILL to it alone): one flsilo error
    that says to rerun (finished epochs are kept) or use fewer workers."""
    samples = _samples(tmp_path)
    parent = os.getpid()
    real = SampleSet.__getitem__

    def killed_in_a_worker(self, key):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, key)

    monkeypatch.setattr(SampleSet, "__getitem__", killed_in_a_worker)
    with pytest.raises(WorkspaceError) as caught:
        _all(samples, [[0, 1], [2, 3]], workers=1)
    assert caught.value.code is Code.WORKER_DIED
    assert "data-loading worker died" in caught.value.message
    assert "--workers" in caught.value.hint
    assert len(_all(samples, [[0, 1]], workers=0)) == 1  # in the main process it reads


def test_a_worker_that_crashed_is_not_said_to_be_short_of_memory() -> None:
    """torch's line for a worker's segmentation fault (a decoder on a damaged file): the
    hint does not say to give fewer --workers; a SIGKILL keeps that hint."""
    from site_kit.data.stream import drained

    def dies(how: str) -> Iterator[int]:
        yield 1
        raise RuntimeError(f"DataLoader worker (pid 7) is killed by signal: {how}. ")

    for how, words in (("Segmentation fault", "will not help"), ("Killed", "give fewer --workers")):
        with pytest.raises(WorkspaceError) as caught:
            list(drained(dies(how), workers=1))
        assert caught.value.code is Code.WORKER_DIED and words in caught.value.hint
        assert f"killed by signal: {how}" in caught.value.message
    with pytest.raises(RuntimeError, match="Caught ValueError"):  # a worker's own error
        list(drained(iter_raising("Caught ValueError in DataLoader worker process 0."), 1))


def iter_raising(text: str) -> Iterator[int]:
    raise RuntimeError(text)
    yield 0
