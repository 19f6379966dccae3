"""``flsilo train --cache DIR``: decoded images at the plan's size, for data slow to decode.

The first run decodes every record of the index once (in the DataLoader's workers), scales
and resizes it per the plan, and writes it as unsigned integers, uint8 for ``8bit``
intensity and uint16 otherwise (each value rounded to the nearest 1/255 or 1/65535), into
``DIR/KEY.u8`` (or ``.u16``) with ``DIR/KEY.json`` beside it, atomically. KEY is the sha256
of the index's digest and the plan's resize, intensity, window and input shape: when a file
changes (the index digest changes) or the plan scales differently, the cache is another
one, built afresh, and the old one for the same data is removed. Later runs read one
sample at a time with ``pread`` (nothing is mapped, so memory stays flat); augmentation
and normalisation still run per sample. A run with the cache gives the same bundle with
any number of workers; it equals a run without the cache where no value needed rounding
(8-bit files already at the input size and channels).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flsilo.fs.atomic import atomic_writer, write_text
from flsilo.fs.untrusted import read_bounded
from flsilo.runtime.errors import FlsiloError
from site_kit.data.samples import Samples

CACHE_VERSION = 1
META_LIMIT = 1 << 16
"""A cache's JSON description is a few hundred bytes; a folder may hold anything else."""


@dataclass
class DecodedCache:
    """One data source's scaled images, read back one record at a time."""

    path: Path
    dtype: str  # "uint8" or "uint16"
    shape: tuple[int, ...]
    _fd: int | None = field(default=None, repr=False, compare=False)

    @property
    def scale(self) -> float:
        return 255.0 if self.dtype == "uint8" else 65535.0

    @property
    def record_bytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def __getstate__(self) -> dict[str, Any]:  # a worker opens the file itself
        return {**self.__dict__, "_fd": None}

    def read(self, i: int) -> np.ndarray:
        """Record ``i`` (its place in the index) scaled to [0, 1], float32 C x H x W."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self._fd, self.record_bytes, i * self.record_bytes)
        values = np.frombuffer(data, dtype=self.dtype).reshape(self.shape)
        return values.astype(np.float32) / np.float32(self.scale)


def cache_key(samples: Samples) -> str:
    p = samples.preprocessor.preprocess
    what = [CACHE_VERSION, samples.index.digest, p.resize, p.intensity, p.window]
    what.append(list(samples.preprocessor.input_shape))
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def with_cache(samples: Samples, directory: Path, workers: int) -> Samples:
    """``samples`` reading scaled images from the cache in ``directory`` (built if needed)."""
    if samples.is_table:
        return samples  # tables are already in memory
    key = cache_key(samples)
    dtype = "uint8" if samples.preprocessor.preprocess.intensity == "8bit" else "uint16"
    suffix = "u8" if dtype == "uint8" else "u16"
    cache = DecodedCache(directory / f"{key}.{suffix}", dtype, samples.preprocessor.input_shape)
    if not _complete(cache, directory / f"{key}.json", len(samples.index)):
        _build(samples, cache, directory, key, workers)
    return replace(samples, cache=cache)


def _complete(cache: DecodedCache, meta: Path, count: int) -> bool:
    try:
        doc = json.loads(read_bounded(meta, META_LIMIT))
        size = cache.path.stat().st_size
    except (OSError, ValueError, FlsiloError):
        return False
    return bool(
        doc.get("version") == CACHE_VERSION
        and doc.get("records") == count
        and size == count * cache.record_bytes
    )


def _build(samples: Samples, cache: DecodedCache, directory: Path, key: str, workers: int) -> None:
    from site_kit.data.stream import scaled_batches

    directory.mkdir(parents=True, exist_ok=True)
    whole = replace(samples, positions=np.arange(len(samples.index), dtype=np.int64))
    with atomic_writer(cache.path) as fh:
        for batch in scaled_batches(whole, workers):
            values = np.clip(np.rint(batch * cache.scale), 0, cache.scale).astype(cache.dtype)
            fh.write(np.ascontiguousarray(values).tobytes())
    doc = {
        "version": CACHE_VERSION,
        "records": len(samples.index),
        "index_sha256": samples.index.digest,
        "data": str(samples.ctx.root),
        "dtype": cache.dtype,
        "shape": list(cache.shape),
    }
    write_text(directory / f"{key}.json", json.dumps(doc, indent=1) + "\n")
    for old in directory.glob("*.json"):  # older caches of the same data are stale now
        if old.stem == key:
            continue
        try:
            if json.loads(read_bounded(old, META_LIMIT)).get("data") == doc["data"]:
                for suffix in (".u8", ".u16", ".json"):
                    old.with_suffix(suffix).unlink(missing_ok=True)
        except (OSError, ValueError, FlsiloError):
            continue
