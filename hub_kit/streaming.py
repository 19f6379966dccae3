"""Stream tensors from verified bundles, chunk by chunk, through a rule into a writer.

Inputs and the round's package are read chunk by chunk (``pread``); each chunk of each
tensor is widened to float64, combined, narrowed and handed to ``write`` in file order, so
the next package is written (and hashed) as it is computed. Memory is bounded by the chunks
in flight (a fixed float64 budget shared by the inputs), not by the model size nor by the
number of sites.

Two-pass rules first reduce every bundle to the Gram matrix of the updates (bundle minus
package, ``first_pass``); the rule turns it into one coefficient per site and the second
pass writes ``package + sum_k c_k (bundle_k - package)``. Every pass also measures each
site's update norm, its distance to the aggregated update and its cosine to the round's
robust aggregate (the anomaly figures). The robust aggregate is the coordinate-wise median
of the updates (unweighted: one vote per site), computed chunk by chunk like everything
else, so it costs no extra memory: a sign-flipped or otherwise reversed update points away
from it (cosine near -1) however it is scaled (``hub_kit.cosines``). The aggregation's
cosines are taken over all float elements of a model up to 4M of them, and over every S-th
element in file order above that, so their cost stays a small, bounded share of the round;
the first pass, which the cosine gate decides on, always takes every element (a sample
known in advance would let an update hide its reversal between the sampled elements).

A coordinate-wise round can instead merge by the sites' Fisher diagonals (the round's plan
says ``merge = "fisher"``; bundles carry ``fisher.NAME`` tensors, so each input is read
through its own offsets), and a server optimizer can then move each combined chunk against
the package (``ServerHook``, ``hub_kit.server_state``). ``flsilo simulate`` streams
in-memory safetensors bytes through these same functions, so its numbers are the pipeline's.

Non-float tensors are never averaged: the output holds their element-wise maximum across
inputs (a counter such as BatchNorm's num_batches_tracked keeps the largest count; a
boolean mask becomes the union of the masks).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from flsilo.format.tensorfile import (
    FLOAT_DTYPES,
    ITEMSIZE,
    NUMPY_DTYPE,
    TensorInfo,
    from_float64,
    to_float64,
)
from flsilo.runtime import progress
from hub_kit.cosines import FirstPass, cosines, median_stride, median_sums
from hub_kit.strategies.base import Rule, Strategy, TwoPassRule, is_two_pass
from hub_kit.strategies.math import fisher_weighted_mean
from hub_kit.strategies.robust import dot

CHUNK_BUDGET_BYTES = 64 * 1024 * 1024
"""float64 working set for one chunk across all inputs."""

Writer = Callable[[memoryview], object]

WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Chunks combined at once (numpy releases the GIL); the output does not depend on it."""

FISHER_PREFIX = "fisher."
"""Bundle tensors holding a site's diagonal Fisher for the parameter named after the prefix."""


@dataclass(frozen=True)
class StreamInput:
    """One verified file (memory-mapped) or, in ``simulate``, its bytes in memory.

    ``layout`` gives this input's own tensor offsets when they differ from the package's
    (a bundle with extra Fisher tensors); ``None`` means laid out exactly like the package.
    """

    path: Path | None
    data_start: int
    weight: float
    data: bytes | None = None
    layout: Mapping[str, TensorInfo] | None = None


class ServerHook(Protocol):
    """Moves one combined float chunk of one tensor from the package's values ``x``."""

    def apply(
        self, info: TensorInfo, start: int, count: int, x: np.ndarray, combined: np.ndarray
    ) -> np.ndarray:
        """The output values for elements [start, start+count) of ``info``."""
        ...


@dataclass(frozen=True)
class SiteFigures:
    """Anomaly figures of one site's update (bundle minus the round's package)."""

    update_norm: float
    distance: float
    """Distance from this update to the aggregated update."""
    cosine: float | None = None
    """Cosine to the coordinate-wise median update (None when either is zero)."""


class Mapped:
    """Read access to one safetensors data section: a file read chunk by chunk, or bytes.

    A file is read with ``pread`` into a fresh array per chunk (never memory-mapped: the
    kernel maps a page cache's large folios whole, so a map of K inputs kept K x several
    MiB resident however small the chunks), so memory holds only the chunks in flight.
    """

    def __init__(
        self,
        path: Path | None,
        data_start: int,
        data: bytes | None = None,
        layout: Mapping[str, TensorInfo] | None = None,
    ) -> None:
        self.data_start = data_start
        self.layout = layout
        self.path = path
        self.fd: int | None = None
        self.buffer: bytes = b""
        if data is not None:
            self.buffer = data
        else:
            assert path is not None
            # never blocks on a FIFO nor follows a link swapped in since the file was checked
            # (a dry run reads inbox files it verified a moment before): an OSError instead
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            self.fd = os.open(path, flags)

    def own(self, info: TensorInfo) -> TensorInfo | None:
        """This source's entry for the tensor named like ``info`` (None: it has none)."""
        return info if self.layout is None else self.layout.get(info.name)

    def chunk(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        """Elements [start, start+count) of tensor ``info`` as stored (not widened)."""
        dtype = NUMPY_DTYPE[info.dtype]
        offset = self.data_start + info.begin + start * ITEMSIZE[info.dtype]
        if self.fd is None:
            return np.frombuffer(self.buffer, dtype=dtype, count=count, offset=offset)
        out = np.empty(count, dtype=dtype)
        view = out.data.cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n <= 0:
                raise ValueError(f"{self.path} ended while it was read")
            done += n
        return out

    def release(self, offset: int) -> None:
        """Nothing to drop: chunks are read into arrays that go away with their chunk."""

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass(frozen=True)
class _Chunk:
    info: TensorInfo
    start: int
    count: int
    first: int = 0
    """How many float elements the file holds before this chunk's tensor."""

    @property
    def offset(self) -> int:
        return self.info.begin + self.start * ITEMSIZE[self.info.dtype]

    @property
    def end(self) -> int:
        return self.offset + self.count * ITEMSIZE[self.info.dtype]


def _chunks(layout: Sequence[TensorInfo], inputs: int, in_flight: int = 1) -> Iterator[_Chunk]:
    """Chunks in file order; 2 float64 copies per input plus the package's, for every chunk
    in flight, fit the budget."""
    per_chunk = max(4096, CHUNK_BUDGET_BYTES // (8 * (2 * inputs + 2) * in_flight))
    first = 0
    for info in sorted(layout, key=lambda t: t.begin):
        for start in range(0, info.numel, per_chunk):
            yield _Chunk(info, start, min(per_chunk, info.numel - start), first)
        first += info.numel if info.dtype in FLOAT_DTYPES else 0


class _Sources:
    """The round's package and the K inputs, mapped for the duration of one pass."""

    def __init__(self, base: StreamInput, inputs: Sequence[StreamInput]) -> None:
        if not inputs:
            raise ValueError("nothing to aggregate")
        self.maps: list[Mapped] = []
        try:
            for item in (base, *inputs):
                self.maps.append(Mapped(item.path, item.data_start, item.data, item.layout))
        except BaseException:
            self.close()
            raise

    def raws(self, chunk: _Chunk) -> tuple[np.ndarray, list[np.ndarray]]:
        views = []
        for m in self.maps:
            own = m.own(chunk.info)
            if own is None:
                raise ValueError(f"an input lacks tensor {chunk.info.name!r}")
            views.append(m.chunk(own, chunk.start, chunk.count))
        return views[0], views[1:]

    def fishers(self, chunk: _Chunk) -> list[np.ndarray] | None:
        """Each input's Fisher diagonal for this chunk, widened; None if any input lacks it."""
        name = FISHER_PREFIX + chunk.info.name
        infos = [m.layout.get(name) if m.layout else None for m in self.maps[1:]]
        if any(i is None for i in infos):
            return None
        return [
            to_float64(i.dtype, m.chunk(i, chunk.start, chunk.count))
            for m, i in zip(self.maps[1:], infos, strict=True)
            if i is not None
        ]

    def release(self, chunk: _Chunk) -> None:
        for m in self.maps:
            m.release(chunk.end)

    def close(self) -> None:
        for m in self.maps:
            m.close()


def first_pass(
    layout: Sequence[TensorInfo],
    base: StreamInput,
    inputs: Sequence[StreamInput],
    *,
    pairwise: bool = True,
) -> np.ndarray:
    """Gram matrix ``G[i, j] = <u_i, u_j>`` of the float updates against the package.

    With ``pairwise=False`` only the diagonal (squared update norms) is filled, the rest is 0.
    """
    return measure(layout, base, inputs, pairwise=pairwise).gram


def measure(
    layout: Sequence[TensorInfo],
    base: StreamInput,
    inputs: Sequence[StreamInput],
    *,
    pairwise: bool = True,
    median: bool = False,
) -> FirstPass:
    """The first pass: the Gram matrix (see :func:`first_pass`) and, with ``median``, the
    sums for each update's cosine to the coordinate-wise median update, over every float
    element whatever the model's size (a gate decides on them: no element goes unseen)."""
    k = len(inputs)
    gram = np.zeros((k, k))
    sums = np.zeros(2 * k + 1) if median else None
    floats = sum(t.nbytes for t in layout if t.dtype in FLOAT_DTYPES)
    sources = _Sources(base, inputs)
    try:
        with progress.stage(f"measuring {progress.counted(k, 'updates')}", total_bytes=k * floats):
            for chunk in _chunks(layout, k):
                if chunk.info.dtype in FLOAT_DTYPES:
                    _measure_chunk(sources, chunk, gram, sums, pairwise)
                    progress.advance(k * (chunk.end - chunk.offset))
                sources.release(chunk)
    finally:
        sources.close()
    return FirstPass(np.triu(gram) + np.triu(gram, 1).T, sums)


def _measure_chunk(
    sources: _Sources, chunk: _Chunk, gram: np.ndarray, sums: np.ndarray | None, pairwise: bool
) -> None:
    """Add one float chunk's products (and median sums) to ``gram`` and ``sums``."""
    k = len(gram)
    raw_base, raws = sources.raws(chunk)
    b = to_float64(chunk.info.dtype, raw_base)
    updates = [np.subtract(to_float64(chunk.info.dtype, r), b) for r in raws]
    del raws, raw_base, b
    for i in range(k):
        for j in range(i, k if pairwise else i + 1):
            gram[i, j] += dot(updates[i], updates[j])
    if sums is not None:
        sums += median_sums(chunk.first + chunk.start, 1, updates)  # a gate judges every element


def aggregate_stream(
    layout: Sequence[TensorInfo],
    base: StreamInput,
    inputs: Sequence[StreamInput],
    rule: Rule,
    write: Writer,
    coefficients: np.ndarray | None = None,
    *,
    fisher: bool = False,
    server: ServerHook | None = None,
) -> list[SiteFigures]:
    """Write the aggregated data section (tensors in file order) through ``write``.

    A two-pass rule needs ``coefficients`` (from its ``coefficients(first_pass(...))``);
    a coordinate-wise strategy combines each chunk by itself, or, with ``fisher``, the
    sites' Fisher diagonals weight it. ``server`` then moves each combined float chunk
    from the package's values. Returns each input's figures (against the combined update,
    before any server step).
    """
    if is_two_pass(rule) and coefficients is None:
        raise ValueError(f"{rule.name} needs its first-pass coefficients")
    weights = np.array([i.weight for i in inputs], dtype=np.float64)
    norms = np.zeros(len(inputs))
    distances = np.zeros(len(inputs))
    to_median = np.zeros(2 * len(inputs) + 1)  # the sums cosines() takes
    stride = median_stride(layout)
    sources = _Sources(base, inputs)

    def work(chunk: _Chunk) -> _Combined:
        return _combine_chunk(sources, chunk, rule, weights, coefficients, fisher, stride)

    k = len(inputs)
    total = k * sum(t.nbytes for t in layout)
    try:
        with (
            progress.stage(f"combining {progress.counted(k, 'bundles')}", total_bytes=total),
            ThreadPoolExecutor(max_workers=WORKERS) as pool,
        ):
            pending: deque[tuple[_Chunk, Future[_Combined]]] = deque()
            for chunk in _chunks(layout, len(inputs), WORKERS + 1):
                pending.append((chunk, pool.submit(work, chunk)))
                while len(pending) > WORKERS:
                    _finish(
                        pending.popleft(), write, server, sources, (norms, distances, to_median)
                    )
            while pending:
                _finish(pending.popleft(), write, server, sources, (norms, distances, to_median))
    finally:
        sources.close()
    cos = cosines(to_median)
    return [
        SiteFigures(math.sqrt(n), math.sqrt(d), c)
        for n, d, c in zip(norms.tolist(), distances.tolist(), cos, strict=True)
    ]


@dataclass
class _Combined:
    """One combined chunk: float64 values (with the package's) or raw values, and figures."""

    out: np.ndarray
    base: np.ndarray | None
    norms: np.ndarray
    distances: np.ndarray
    to_median: np.ndarray


def _combine_chunk(
    sources: _Sources,
    chunk: _Chunk,
    rule: Rule,
    weights: np.ndarray,
    coefficients: np.ndarray | None,
    fisher: bool,
    stride: int,
) -> _Combined:
    """Combine one chunk on a worker thread: every output element from its own coordinates."""
    k = len(weights)
    norms = np.zeros(k)
    distances = np.zeros(k)
    to_median = np.zeros(2 * k + 1)
    raw_base, raws = sources.raws(chunk)
    dtype = chunk.info.dtype
    if dtype not in FLOAT_DTYPES:
        return _Combined(np.max(np.stack(raws), axis=0), None, norms, distances, to_median)
    b = to_float64(dtype, raw_base)
    xs = [to_float64(dtype, r) for r in raws]
    fishers = sources.fishers(chunk) if fisher else None
    if coefficients is not None:
        out, updates = _linear(b, xs, coefficients)
    elif fishers is not None:
        updates = [np.subtract(x, b) for x in xs]
        out = fisher_weighted_mean(xs, fishers, weights)
    else:
        assert not is_two_pass(rule)
        out, updates = _coordinatewise(b, xs, rule, weights)  # type: ignore[arg-type]
    del xs, fishers
    to_median = median_sums(chunk.first + chunk.start, stride, updates)
    delta = np.subtract(out, b)
    for i, u in enumerate(updates):
        norms[i] = dot(u, u)
        np.subtract(u, delta, out=u)
        distances[i] = dot(u, u)
    return _Combined(out, b, norms, distances, to_median)


def _finish(
    item: tuple[_Chunk, Future[_Combined]],
    write: Writer,
    server: ServerHook | None,
    sources: _Sources,
    sums: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """In file order: the server step, narrowing, writing, figures, dropping read pages."""
    chunk, future = item
    done = future.result()
    if done.base is None:
        narrowed = done.out
    else:
        out = done.out
        if server is not None:
            out = server.apply(chunk.info, chunk.start, chunk.count, done.base, out)
        narrowed = np.ascontiguousarray(from_float64(chunk.info.dtype, out))
    write(narrowed.reshape(-1).data.cast("B"))
    norms, distances, to_median = sums
    norms += done.norms
    distances += done.distances
    to_median += done.to_median
    sources.release(chunk)
    progress.advance(len(norms) * (chunk.end - chunk.offset))  # every input's share read


def _coordinatewise(
    b: np.ndarray, xs: list[np.ndarray], strategy: Strategy, weights: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    updates = [np.subtract(x, b) for x in xs]
    return strategy.combine(xs, weights.copy()), updates


def _linear(
    b: np.ndarray, xs: list[np.ndarray], coefficients: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``b + sum_k c_k (x_k - b)``, accumulated in input order; the x_k become the updates."""
    acc = np.zeros_like(b)
    for x, c in zip(xs, coefficients.tolist(), strict=True):
        np.subtract(x, b, out=x)
        acc += c * x
    return np.add(b, acc), xs


def run_two_pass(rule: TwoPassRule, gram: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The rule's coefficients for this round (one per input, same order)."""
    return np.asarray(rule.coefficients(gram, weights), dtype=np.float64)
