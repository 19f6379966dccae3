"""hub_kit.roundmath's one way to open a round's server optimizer step: aggregate's start
(the parent round's state), replay's (the state a provenance records) and simulate's (state
held in memory) name a ServerStart, and open_server opens each the same way."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from flsilo.format import manifest as mf
from flsilo.format.tensorfile import read_header
from flsilo.plans.plan import ROUND_STATISTICS, Plan
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import VerificationError
from hub_kit.inmemory import aggregate_in_memory, lay_out
from hub_kit.roundmath import (
    RoundView,
    ServerStart,
    ViewKind,
    continued_start,
    open_server,
    recorded_start,
    stream_round,
)
from hub_kit.server_optimizers import make_server_optimizer
from hub_kit.server_state import STATE_DIR, state_name
from hub_kit.strategies import parse_strategy
from hub_kit.strategies.base import Rule

OPT = make_server_optimizer("fedadam", lr=0.5)


def _model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=3)}


def _state_bytes() -> bytes:
    """A server state after one in-memory fedadam round."""
    first = aggregate_in_memory(_model(0), [_model(1), _model(2)], [1.0, 2.0], _rule(), server=OPT)
    assert first.server_state is not None
    return first.server_state


def _rule() -> Rule:
    return parse_strategy("fedavg")


def _step(start: ServerStart | None) -> tuple[bytes, bytes | None]:
    """One streamed round from ``start``: the data section and the new state's bytes."""
    base = lay_out(_model(3))
    inputs = [lay_out(_model(s)).stream(w) for s, w in ((4, 1.0), (5, 3.0))]
    run = open_server(start, base.tensors)
    out = bytearray()
    stream_round(base.tensors, base.stream(0.0), inputs, _rule(), out.extend, server=run)
    if run is None:
        return bytes(out), None
    run.close()
    return bytes(out), run.state_bytes()


def test_a_state_file_and_the_same_state_in_memory_step_the_same(tmp_path: Path) -> None:
    state = _state_bytes()
    path = tmp_path / "fed-r0001-server.safetensors"
    path.write_bytes(state)
    from_file = _step(ServerStart(OPT, path, hashlib.sha256(state).hexdigest()))
    in_memory = _step(ServerStart(OPT, data=state))
    fresh = _step(ServerStart(OPT))
    assert from_file == in_memory
    assert from_file[1] is not None and fresh[1] is not None
    assert from_file != fresh  # the carried moments change the step
    assert _step(None)[1] is None  # no start: no server step, the rule's output as is
    assert _step(None)[0] != fresh[0]


def test_a_state_file_whose_sha256_differs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.safetensors"
    path.write_bytes(_state_bytes())
    with pytest.raises(VerificationError) as err:
        open_server(ServerStart(OPT, path, "0" * 64), lay_out(_model(0)).tensors)
    assert err.value.code == Code.BAD_SERVER_STATE


def _view(kind: ViewKind, plan: Plan) -> RoundView:
    laid = lay_out(_model(0))
    header = read_header(io.BytesIO(laid.data), len(laid.data), "package")[0]
    model = mf.ModelInfo("mlp", "0" * 64, ("a", "b", "c"), (4,), head=("w", "b"))
    base = laid.stream(0.0)
    return RoundView(kind, base, header, model, plan, laid.tensors, base)


def _parent(step: mf.ServerStep | None) -> mf.Provenance:
    return mf.Provenance("fedavg", {}, (), (), server=step)


def test_aggregate_continues_the_parent_rounds_state_of_the_same_optimizer() -> None:
    root = Path("hub")
    view = _view(ViewKind.WHOLE, Plan(1, 8))
    step = mf.ServerStep("fedadam", OPT.params(), None, "a" * 64, "fed-r0001-server.safetensors")
    start = continued_start(root, OPT, view, _parent(step))
    assert start == ServerStart(OPT, root / STATE_DIR / step.state_file, "a" * 64)
    switched = mf.ServerStep("fedavgm", {}, None, "a" * 64, "fed-r0001-server.safetensors")
    assert continued_start(root, OPT, view, _parent(switched)) == ServerStart(OPT)  # fresh
    assert continued_start(root, OPT, view, None) == ServerStart(OPT)
    assert continued_start(root, make_server_optimizer("none"), view, _parent(step)) is None
    solved = _view(ViewKind.STATISTICS, Plan(1, 8, kind=ROUND_STATISTICS))
    assert not solved.streams and continued_start(root, OPT, solved, _parent(step)) is None


def test_replay_starts_from_the_state_the_provenance_records() -> None:
    root = Path("hub")
    assert recorded_start(root, "fed", 3, None) is None
    fresh = mf.ServerStep("fedadam", OPT.params(), None, "b" * 64, state_name("fed", 4))
    assert recorded_start(root, "fed", 3, fresh) == ServerStart(OPT)
    carried = mf.ServerStep("fedadam", OPT.params(), "c" * 64, "b" * 64, state_name("fed", 4))
    start = recorded_start(root, "fed", 3, carried)
    assert start == ServerStart(OPT, root / STATE_DIR / state_name("fed", 3), "c" * 64)
