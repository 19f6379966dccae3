"""--cache: decoded images at the plan's size, exact where nothing rounds, rebuilt on change."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from flsilo.plans.federation import DataSpec
from flsilo.plans.preprocessing import Preprocess
from site_kit.data.cache import with_cache
from site_kit.data.samples import open_samples


def _data(root: Path, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _open(data: Path, store: Path, **kw):
    return open_samples(data, None, ("a", "b"), (3, 8, 8), DataSpec(), store=store, **kw)


def test_cached_samples_equal_decoded_ones_where_nothing_rounds(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", (8, 8))
    samples = _open(data, tmp_path / "site", preprocess=Preprocess(normalize="imagenet"))
    cached = with_cache(samples, tmp_path / "cache", workers=1)
    (u8,) = (tmp_path / "cache").glob("*.u8")
    assert u8.stat().st_size == 8 * 3 * 8 * 8
    for k in range(len(samples)):
        assert np.array_equal(cached.sample(k), samples.sample(k))
    # built once: a second run reads the same file
    before = u8.stat().st_mtime_ns
    again = with_cache(_open(data, tmp_path / "site"), tmp_path / "cache", workers=0)
    assert u8.stat().st_mtime_ns == before and np.array_equal(again.scaled(3), cached.scaled(3))


def test_resized_samples_round_to_the_nearest_step_and_any_workers_build_the_same(
    tmp_path: Path,
) -> None:
    data = _data(tmp_path / "data", (13, 11))
    samples = _open(data, tmp_path / "site")
    by_worker = [with_cache(samples, tmp_path / f"cache{w}", workers=w) for w in (0, 2)]
    files = [next((tmp_path / f"cache{w}").glob("*.u8")).read_bytes() for w in (0, 2)]
    assert files[0] == files[1]
    for k in range(len(samples)):
        diff = np.abs(by_worker[0].sample(k) - samples.sample(k))
        assert float(diff.max()) <= 0.5 / 255 + 1e-6


def test_a_changed_file_makes_a_new_cache_and_removes_the_stale_one(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", (8, 8))
    with_cache(_open(data, tmp_path / "site"), tmp_path / "cache", workers=0)
    (old,) = (tmp_path / "cache").glob("*.u8")
    target = data / "b" / "2.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(target)
    os.utime(target, ns=(1, 10**18))
    fresh = with_cache(_open(data, tmp_path / "site"), tmp_path / "cache", workers=0)
    (new,) = (tmp_path / "cache").glob("*.u8")
    assert new != old and not old.exists() and len(list((tmp_path / "cache").glob("*.json"))) == 1
    assert float(fresh.scaled(6).max()) == 0.0
