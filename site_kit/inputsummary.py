"""A small summary of a site's inputs for the hub's drift flags: channel means and spreads,
brightness and stored-size histograms, and the share of unusable records.

Taken over at most ``SUMMARY_SAMPLES`` training records, evenly spaced in index order (the
same records whatever the worker count), after the plan's intensity scaling, channels and
resize and before normalisation and augmentation: what differs here between sites is how
their files become inputs (a window, an inversion, a crop), not the federation's own
normalisation. Images held in an npz are summarised as images, as stored (their stored
size is the input's). A histogram bin holding fewer samples than the plan's minimum cell size is
withheld (``None``). A DP federation's bundles carry no summary (it is not privatised).
"""

from __future__ import annotations

import numpy as np

from flsilo.format.manifest import InputSummary, Plan
from site_kit.data.samples import Samples
from site_kit.sitedata import SiteData

SUMMARY_SAMPLES = 2000
BRIGHTNESS_BINS = 8
SIZE_EDGES = (64, 128, 256, 512, 1024)
"""Bands of the stored image's longer side: under 64, 64-127, ..., 1024 and over."""
WHAT = "input summary: channel means and spreads, brightness and image-size histograms"


def _withheld(counts: np.ndarray, min_cell: int) -> tuple[int | None, ...]:
    return tuple(None if 0 < int(c) < min_cell else int(c) for c in counts)


def summarize(data: SiteData, plan: Plan) -> InputSummary:
    """The summary of a site's training records (bins below the plan's minimum cell size
    withheld)."""
    return summary_of(data.train, data.skipped, plan.min_cell_size)


def summary_of(samples: Samples, skipped: int, min_cell: int) -> InputSummary:
    """The summary of ``samples``, ``skipped`` unusable records beside them."""
    n = len(samples)
    picks = np.unique(np.linspace(0, max(n - 1, 0), min(n, SUMMARY_SAMPLES)).astype(np.int64))
    sums = squares = None
    count = 0
    brightness = np.zeros(BRIGHTNESS_BINS, dtype=np.int64)
    sizes = np.zeros(len(SIZE_EDGES) + 1, dtype=np.int64)
    shape = tuple(samples.preprocessor.input_shape)
    images = not samples.is_table or samples.stored_images  # summarised as images are
    for k in picks:
        if samples.is_table:
            x = np.asarray(samples.values[samples.record_id(int(k))], dtype=np.float64)  # type: ignore[index]
            if not images:
                flat = np.nan_to_num(x.reshape(-1, 1))
            else:  # fed as stored: its channels, its values as the brightness, its size
                x = np.nan_to_num(x.reshape(shape))
                stored = shape[1:]
        else:
            raw = samples.raw(int(k))
            x = np.asarray(samples.preprocessor.scaled(raw), dtype=np.float64)
            stored = raw.size
        if images:
            flat = x.reshape(x.shape[0], -1)
            level = float(np.clip(x.mean(), 0.0, 1.0))
            brightness[min(int(level * BRIGHTNESS_BINS), BRIGHTNESS_BINS - 1)] += 1
            sizes[int(np.searchsorted(SIZE_EDGES, max(stored), side="right"))] += 1
        sums = flat.sum(axis=1) if sums is None else sums + flat.sum(axis=1)
        sq = (flat * flat).sum(axis=1)
        squares = sq if squares is None else squares + sq
        count += flat.shape[1]
    mean = (sums / count) if sums is not None and count else np.zeros(0)
    var = (squares / count - mean * mean) if squares is not None and count else np.zeros(0)
    total = n + skipped
    return InputSummary(
        samples=len(picks),
        channel_mean=tuple(float(v) for v in mean),
        channel_std=tuple(float(v) for v in np.sqrt(np.maximum(var, 0.0))),
        brightness=_withheld(brightness, min_cell) if images else (),
        sizes=_withheld(sizes, min_cell) if images else (),
        bad_share=round(skipped / total, 6) if total else 0.0,
    )
