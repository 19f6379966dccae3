"""What one round computes from its bundles, by the round's kind; shared by aggregate and replay.

- whole bundles: the streaming aggregator over the package's layout, as ever;
- partial bundles (the plan freezes tensors): the same aggregator over the trainable
  tensors only, against a scratch copy of the package's trainable tensors laid out like the
  bundles; the frozen tensors are copied from the round's package into the next one;
- statistics bundles (closed-form round): the statistics are summed in site order and the
  head solved (hub_kit.closed_form); every other tensor is copied from the round's package.
The output is the next package's data section, written in file order through ``write``.

:func:`stream_round` is the one computation of a streamed round (the first pass, a two-pass
rule's coefficients, the stream), used by ``aggregate``, ``audit --replay`` (both through
:func:`compute_round`) and the in-memory path of ``simulate``; :func:`open_server` is the
one way all three open a round's server optimizer step, from the :class:`ServerStart` each
names (:func:`continued_start`: the state the parent round wrote; :func:`recorded_start`:
the state a provenance records; or a state held in memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from flsilo.format import manifest as mf
from flsilo.format.tensorfile import NUMPY_DTYPE, Header, TensorInfo, from_float64
from flsilo.format.tensorsets import (
    ROUND_FEDSTATS,
    ROUND_STATISTICS,
    SOLVER_RIDGE,
    expected_specs,
    layout_of,
    parse_solver,
)
from flsilo.fs.atomic import atomic_writer
from flsilo.fs.untrusted import read_span
from flsilo.plans.preprocessing import stats_width
from hub_kit.closed_form import REPLAY_ATOL, solve_head, sum_statistics
from hub_kit.fedstats import Normalisation, carried, pooled_normalisation
from hub_kit.server_optimizers import ServerOptimizer
from hub_kit.server_state import (
    STATE_DIR,
    ServerRun,
    in_memory_state,
    previous_state,
    state_name,
)
from hub_kit.strategies.base import Rule, is_two_pass
from hub_kit.streaming import (
    ServerHook,
    SiteFigures,
    StreamInput,
    Writer,
    aggregate_stream,
    first_pass,
    run_two_pass,
)


class ViewKind(StrEnum):
    """How a round's bundles make the next package (its plan's round kind, and for a
    training round whether the bundles carry every tensor)."""

    WHOLE = "whole"
    """Bundles carry the whole model: streamed over the package's layout."""
    PARTIAL = "partial"
    """The plan freezes tensors: streamed over the trainable ones, the rest copied."""
    STATISTICS = "statistics"
    """A closed-form round: the statistics summed and the head solved."""
    FEDSTATS = "stats"
    """A federation-statistics round: the model is copied, the statistics pooled."""


@dataclass(frozen=True)
class RoundView:
    """The round as the streaming aggregator sees it: the bundles' layout and its base."""

    kind: ViewKind
    package: StreamInput
    header: Header
    model: mf.ModelInfo
    plan: mf.Plan
    layout: tuple[TensorInfo, ...]
    """The tensors every bundle of this round carries, in their file order."""
    base: StreamInput
    """The round's package, laid out like the bundles (a scratch copy for partial rounds)."""

    @property
    def streams(self) -> bool:
        """Whether bundles are combined by the strategy (not for statistics rounds)."""
        return self.kind not in (ViewKind.STATISTICS, ViewKind.FEDSTATS)


def bundle_specs(
    header: Header, model: mf.ModelInfo, plan: mf.Plan
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensor set a bundle answering this package's plan must carry."""
    return expected_specs(
        header,
        model.head,
        plan.kind,
        plan.freeze,
        plan.head_solver,
        stats_width(plan.preprocess, model.input_shape),
        adapters=plan.adapters,
    )


def round_view(
    package_path: Path, header: Header, model: mf.ModelInfo, plan: mf.Plan, scratch: Path
) -> RoundView:
    """How to combine this round's bundles; a partial round writes its base into ``scratch``."""
    package = StreamInput(package_path, header.data_start, 0.0)
    specs = bundle_specs(header, model, plan)
    layout = tuple(layout_of(specs))
    if plan.kind == ROUND_STATISTICS:
        return RoundView(ViewKind.STATISTICS, package, header, model, plan, layout, package)
    if plan.kind == ROUND_FEDSTATS:
        return RoundView(ViewKind.FEDSTATS, package, header, model, plan, layout, package)
    if set(specs) == {t.name for t in header.tensors}:
        return RoundView(ViewKind.WHOLE, package, header, model, plan, header.tensors, package)
    where = {t.name: t for t in header.tensors}
    with package_path.open("rb") as src, atomic_writer(scratch) as out:
        for info in layout:
            src.seek(header.data_start + where[info.name].begin)
            out.write(src.read(info.nbytes))
    scratch_base = StreamInput(scratch, 0, 0.0)
    return RoundView(ViewKind.PARTIAL, package, header, model, plan, layout, scratch_base)


def strategy_record(view: RoundView, rule: Rule) -> tuple[str, dict[str, float]]:
    """The provenance's strategy name and parameters for this round."""
    if view.streams:
        return rule.name, rule.params()
    if view.kind is ViewKind.FEDSTATS:
        return "federation-stats", {}
    name, lam = parse_solver(view.plan.head_solver)
    params = {"replay_atol": REPLAY_ATOL} | ({"lambda": lam} if name == SOLVER_RIDGE else {})
    return f"closed-form-{name}", params


def stream_round(
    layout: Sequence[TensorInfo],
    base: StreamInput,
    inputs: Sequence[StreamInput],
    rule: Rule,
    write: Writer,
    *,
    gram: np.ndarray | None = None,
    fisher: bool = False,
    server: ServerHook | None = None,
) -> list[SiteFigures]:
    """Combine ``inputs`` (ordered by site) laid out like ``layout`` into ``write``.

    A two-pass rule first reduces the inputs to their Gram matrix (``gram``: one already
    measured, e.g. by ``aggregate``'s gates, for exactly these inputs) and turns it into one
    coefficient per input, from the inputs' weights; then every rule streams. ``fisher``
    merges by the inputs' Fisher diagonals; ``server`` then applies the server optimizer.
    Returns each input's figures.
    """
    coefficients = None
    if is_two_pass(rule):
        if gram is None:
            gram = first_pass(layout, base, inputs)
        weights = np.array([i.weight for i in inputs], dtype=np.float64)
        coefficients = run_two_pass(rule, gram, weights)  # type: ignore[arg-type]
    return aggregate_stream(
        layout, base, inputs, rule, write, coefficients, fisher=fisher, server=server
    )


def compute_round(
    view: RoundView,
    inputs: Sequence[StreamInput],
    rule: Rule,
    write: Writer,
    *,
    gram: np.ndarray | None = None,
    fisher: bool = False,
    server: ServerHook | None = None,
) -> list[SiteFigures]:
    """Write the next package's data section; return each input's figures (none: statistics).

    ``aggregate`` and ``audit --replay`` both compute a round here. ``gram``, ``fisher`` and
    ``server`` (see :func:`stream_round`) apply to streamed rounds.
    """
    if view.kind is ViewKind.WHOLE:
        return stream_round(
            view.layout, view.base, inputs, rule, write, gram=gram, fisher=fisher, server=server
        )
    trained = bytearray()
    figures: list[SiteFigures] = []
    if view.kind is ViewKind.PARTIAL:
        figures = stream_round(
            view.layout,
            view.base,
            inputs,
            rule,
            trained.extend,
            gram=gram,
            fisher=fisher,
            server=server,
        )
        offsets = {info.name: info for info in view.layout}
    elif view.kind is ViewKind.STATISTICS:
        trained, offsets = _closed_form_head(view, inputs)
    else:  # a stats round leaves the model as it is: its result goes into the next plan
        offsets = {}
    _merge(view, trained, offsets, write)
    return figures


@dataclass(frozen=True)
class ServerStart:
    """A round's server optimizer step before it runs: the optimizer, and the state it starts
    from: a state file (``path``, refused unless its sha256 is ``sha256``), a state held in
    memory (``data``, ``flsilo simulate``), or, with neither, fresh state."""

    optimizer: ServerOptimizer
    path: Path | None = None
    sha256: str | None = None
    data: bytes | None = None


def open_server(start: ServerStart | None, layout: Sequence[TensorInfo]) -> ServerRun | None:
    """The one way a round's server step is opened (aggregate, replay, in memory): the run
    that steps ``layout``'s tensors from ``start``'s state; None without a start."""
    if start is None:
        return None
    if start.path is not None:
        assert start.sha256 is not None
        mapped, header = previous_state(start.path, start.sha256)
    elif start.data is not None:
        mapped, header = in_memory_state(start.data)
    else:
        return ServerRun(start.optimizer, None, None, layout)
    return ServerRun(start.optimizer, mapped, header, layout)


def continued_start(
    hub_root: Path, opt: ServerOptimizer, view: RoundView, parent: mf.Provenance | None
) -> ServerStart | None:
    """Where aggregate's server step starts: the state the parent round wrote for the same
    optimizer, else fresh. None for a round without a server optimizer, and for statistics
    rounds (a solved head). The start's ``sha256`` is the state's (None: fresh state)."""
    if not opt.active or not view.streams:
        return None
    step = parent.server if parent is not None else None
    if step is None or step.optimizer != opt.name:
        return ServerStart(opt)
    return ServerStart(opt, hub_root / STATE_DIR / step.state_file, step.state_out_sha256)


def recorded_start(
    hub_root: Path, federation: str, round_: int, step: mf.ServerStep | None
) -> ServerStart | None:
    """The server step a provenance records, to recompute its round (audit --replay)."""
    if step is None:
        return None
    opt = ServerOptimizer(name=step.optimizer, **step.params)
    if step.state_in_sha256 is None:
        return ServerStart(opt)
    path = hub_root / STATE_DIR / state_name(federation, round_)
    return ServerStart(opt, path, step.state_in_sha256)


def stream_input(path: Path, bundle: Header, weight: float, view: RoundView) -> StreamInput:
    """A bundle to stream; its own offsets are used when it carries extra (Fisher) tensors."""
    same = bundle.layout() == tuple(t.signature() for t in view.layout)
    return StreamInput(
        path,
        bundle.data_start,
        weight,
        layout=None if same else {t.name: t for t in bundle.tensors},
    )


def _closed_form_head(
    view: RoundView, inputs: Sequence[StreamInput]
) -> tuple[bytearray, dict[str, TensorInfo]]:
    """The solved head's bytes, laid out as the package's head tensors in their order."""
    stats = sum_statistics([_read_statistics(i, view.layout) for i in inputs])
    weight, bias = solve_head(view.plan.head_solver, stats, view.plan.task)
    where = {t.name: t for t in view.header.tensors}
    out = bytearray()
    placed: dict[str, TensorInfo] = {}
    for name, values in zip(view.model.head, (weight, bias), strict=True):
        info = where[name]
        raw = np.ascontiguousarray(from_float64(info.dtype, values.reshape(info.shape)))
        placed[name] = TensorInfo(name, info.dtype, info.shape, len(out), len(out) + info.nbytes)
        out += raw.tobytes()
    return out, placed


def round_normalisation(view: RoundView, inputs: Sequence[StreamInput]) -> Normalisation:
    """A stats round's pooled mean and standard deviation, from its bundles in site order."""
    return pooled_normalisation([_read_statistics(i, view.layout) for i in inputs])


def next_statistics(
    view: RoundView, inputs: Sequence[StreamInput], plan: mf.Plan | None
) -> Normalisation | None:
    """The federation statistics the next package's plan carries: this stats round's, or
    the ones the round's own package carries (from an earlier stats round)."""
    if view.kind is ViewKind.FEDSTATS:
        return round_normalisation(view, inputs)
    return carried(plan)


def _read_statistics(item: StreamInput, layout: Sequence[TensorInfo]) -> dict[str, np.ndarray]:
    assert item.path is not None  # statistics bundles are files
    blob = read_span(item.path, item.data_start, layout[-1].end if layout else 0)
    return {
        info.name: np.frombuffer(blob, NUMPY_DTYPE[info.dtype], info.numel, info.begin)
        .astype(np.float64)
        .reshape(info.shape)
        for info in layout
    }


def _merge(
    view: RoundView, computed: bytearray, offsets: dict[str, TensorInfo], write: Writer
) -> None:
    """Write the package's tensors in file order: computed ones, the rest from the package."""
    assert view.package.path is not None
    with view.package.path.open("rb") as src:
        for info in view.header.tensors:
            own = offsets.get(info.name)
            if own is not None:
                write(memoryview(computed)[own.begin : own.end])
                continue
            src.seek(view.package.data_start + info.begin)
            left = info.nbytes
            while left:
                chunk = src.read(min(left, 8 << 20))
                if not chunk:
                    raise OSError(f"{view.package.path}: file shrank while reading")
                write(memoryview(chunk))
                left -= len(chunk)
