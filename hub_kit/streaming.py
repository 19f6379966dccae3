"""Stream tensors from verified bundles, chunk by chunk, through a strategy into one output.

Inputs are memory-mapped; each chunk of each tensor is widened to float64, combined, and
narrowed into the output buffer, then the input pages already consumed are dropped from
this process (MADV_DONTNEED). Memory is bounded by the model size (the output) plus one
chunk per input, not by the number of sites.

Non-float tensors are never averaged: the output holds their element-wise maximum across
inputs (a counter such as BatchNorm's num_batches_tracked keeps the largest count; a
boolean mask becomes the union of the masks).
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flsilo.tensorfile import (
    FLOAT_DTYPES,
    ITEMSIZE,
    NUMPY_DTYPE,
    TensorInfo,
    from_float64,
    to_float64,
)
from hub_kit.strategies.base import Strategy

CHUNK_BUDGET_BYTES = 64 * 1024 * 1024
"""float64 working set for one chunk across all inputs."""


@dataclass(frozen=True)
class StreamInput:
    path: Path
    data_start: int
    weight: float


class _Mapped:
    def __init__(self, item: StreamInput) -> None:
        self.item = item
        self.fh = item.path.open("rb")
        self.map = mmap.mmap(self.fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.released = 0

    def view(self, dtype: np.dtype, offset: int, count: int) -> np.ndarray:
        return np.frombuffer(
            self.map, dtype=dtype, count=count, offset=self.item.data_start + offset
        )

    def release(self, offset: int) -> None:
        upto = (self.item.data_start + offset) // mmap.PAGESIZE * mmap.PAGESIZE
        if upto > self.released and hasattr(self.map, "madvise"):
            self.map.madvise(mmap.MADV_DONTNEED, self.released, upto - self.released)
            self.released = upto

    def close(self) -> None:
        self.map.close()
        self.fh.close()


def aggregate_into(
    layout: Sequence[TensorInfo],
    inputs: Sequence[StreamInput],
    strategy: Strategy,
    out: bytearray,
) -> None:
    """Fill ``out`` (the data section of the result) from ``inputs`` laid out as ``layout``."""
    if not inputs:
        raise ValueError("nothing to aggregate")
    weights = np.array([i.weight for i in inputs], dtype=np.float64)
    per_chunk = max(4096, CHUNK_BUDGET_BYTES // (8 * len(inputs)))
    maps = [_Mapped(i) for i in inputs]
    try:
        for info in layout:
            raw_dtype = NUMPY_DTYPE[info.dtype]
            itemsize = ITEMSIZE[info.dtype]
            total = info.numel
            target = np.frombuffer(out, dtype=raw_dtype, count=total, offset=info.begin)
            for start in range(0, total, per_chunk):
                count = min(per_chunk, total - start)
                offset = info.begin + start * itemsize
                raws = [m.view(raw_dtype, offset, count) for m in maps]
                if info.dtype in FLOAT_DTYPES:
                    combined = strategy.combine([to_float64(info.dtype, r) for r in raws], weights)
                    target[start : start + count] = from_float64(info.dtype, combined)
                else:
                    target[start : start + count] = np.max(np.stack(raws), axis=0)
                del raws
                for m in maps:
                    m.release(offset + count * itemsize)
    finally:
        for m in maps:
            m.close()
