"""The hub's aggregation on whole models held in memory, through the streaming aggregator itself.

``flsilo simulate``, ``flsilo demo``'s in-memory arms and the results scripts combine site
models here. Every model is laid out as the safetensors bytes a bundle would hold (canonical
order, the same writer's header) and streamed, from memory instead of mapped files, through
``hub_kit.roundmath.stream_round``: the same first pass and two-pass coefficients, the same
Fisher merge, the same server optimizer step and state layout as ``flsilo aggregate``. So
a planning number is the pipeline's number, minus keys, signatures and files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flsilo.format.tensorfile import RawTensor, TensorInfo, build_header
from hub_kit.roundmath import ServerStart, open_server, stream_round
from hub_kit.server_optimizers import ServerOptimizer
from hub_kit.strategies.base import Rule
from hub_kit.streaming import FISHER_PREFIX, StreamInput

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Laid:
    """A model as the data section of a safetensors file, with its tensor layout."""

    data: bytes
    header_len: int
    tensors: tuple[TensorInfo, ...]

    def stream(self, weight: float, layout: bool = False) -> StreamInput:
        own = {t.name: t for t in self.tensors} if layout else None
        return StreamInput(None, self.header_len, weight, data=self.data, layout=own)


def lay_out(arrays: Arrays) -> Laid:
    """Bytes exactly as ``write_artifact`` would lay these tensors out (header included)."""
    raw = {name: RawTensor.from_numpy(np.asarray(a)) for name, a in arrays.items()}
    head, infos = build_header({n: (t.dtype, t.shape) for n, t in raw.items()}, {})
    body = b"".join(bytes(raw[i.name].data) for i in infos)
    return Laid(head + body, len(head), tuple(infos))


@dataclass(frozen=True)
class InMemoryRound:
    """The combined model and, with a server optimizer, its new state (a state file's bytes)."""

    arrays: dict[str, np.ndarray]
    server_state: bytes | None = None


def aggregate_in_memory(
    base: Arrays,
    sites: Sequence[Arrays],
    weights: Sequence[float],
    rule: Rule,
    *,
    fishers: Sequence[Arrays] | None = None,
    server: ServerOptimizer | None = None,
    server_state: bytes | None = None,
) -> InMemoryRound:
    """One hub round on in-memory models: ``rule`` (or Fisher merging), then ``server``.

    ``fishers``: each site's diagonal Fisher per parameter (a Fisher round); ``server_state``:
    the state the previous round of the same optimizer returned (None: fresh state).
    """
    laid_base = lay_out(base)
    inputs = []
    for i, (site, w) in enumerate(zip(sites, weights, strict=True)):
        extra = {FISHER_PREFIX + k: v for k, v in fishers[i].items()} if fishers else {}
        inputs.append(lay_out({**site, **extra}).stream(w, layout=bool(extra)))
    start = None
    if server is not None and server.active:
        start = ServerStart(server, data=server_state)
    run = open_server(start, laid_base.tensors)
    out = bytearray()
    stream_round(
        laid_base.tensors,
        laid_base.stream(0.0),
        inputs,
        rule,
        out.extend,
        fisher=bool(fishers),
        server=run,
    )
    if run is not None:
        run.close()
    arrays = {
        t.name: np.frombuffer(bytes(out[t.begin : t.end]), dtype=np.asarray(base[t.name]).dtype)
        .reshape(t.shape)
        .copy()
        for t in laid_base.tensors
    }
    return InMemoryRound(arrays, run.state_bytes() if run is not None else None)


def combine_states(
    base: Arrays, sites: Sequence[Arrays], weights: Sequence[float], rule: Rule
) -> dict[str, np.ndarray]:
    """Aggregate site models (same names, shapes, dtypes as ``base``) with ``rule``."""
    return aggregate_in_memory(base, sites, weights, rule).arrays
