"""The server optimizer's state file: read the previous state, step chunk by chunk, write the new.

The state after round r's aggregation (momentum ``m.NAME``, second moments ``v.NAME``, F32,
one per stepped tensor of the model) is a plain safetensors file in the hub workspace,
``state/FEDERATION-rNNNN-server.safetensors`` for the package NNNN it produced. Its bytes
are a pure function of the optimizer, the previous state, the package and the bundles, so
``audit --replay`` recomputes them; its sha256 is in the package provenance and the log.

A state file is carried to the next round only by the same optimizer; a round that switches
optimizer (or turns one on) starts from fresh state.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from flsilo.format.artifact import sha256_file
from flsilo.format.tensorfile import (
    FLOAT_DTYPES,
    Header,
    TensorInfo,
    build_header,
    read_header,
    to_float64,
)
from flsilo.fs.atomic import atomic_writer
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, VerificationError
from hub_kit.server_optimizers import ServerOptimizer, steps_tensor
from hub_kit.streaming import Mapped

STATE_DIR = "state"
STATE_META_KEY = "flsilo.server_state"


def state_name(federation: str, round_: int) -> str:
    return f"{federation}-r{round_:04d}-server.safetensors"


def state_specs(
    opt: ServerOptimizer, layout: Sequence[TensorInfo]
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The state tensors an optimizer keeps for a model: one F32 per slot per stepped tensor."""
    return {
        f"{slot}.{t.name}": ("F32", t.shape)
        for t in layout
        if steps_tensor(t.name, t.dtype in FLOAT_DTYPES)
        for slot in opt.slots
    }


def _bad_state(path: Path | str, why: str) -> VerificationError:
    return VerificationError(
        f"server optimizer state is not usable: {why}",
        path=path,
        code=Code.BAD_SERVER_STATE,
        hint="restore state/ from backup (its sha256 is in the package provenance), "
        "then run 'flsilo audit'",
    )


def read_state_header(fh: BinaryIO, size: int, source: str) -> Header:
    """Parse and check a state file's safetensors header."""
    try:
        header, _ = read_header(fh, size, source)
    except FlsiloError as err:
        raise _bad_state(source, err.message) from err
    return header


class ServerRun:
    """One round's server step: x from the package, old state in, new state collected."""

    def __init__(
        self,
        opt: ServerOptimizer,
        previous: Mapped | None,
        previous_header: Header | None,
        layout: Sequence[TensorInfo],
        source: str = "server state",
    ) -> None:
        self.opt = opt
        self.previous = previous
        specs = state_specs(opt, layout)
        self.header_bytes, infos = build_header(
            specs, {STATE_META_KEY: json.dumps({"optimizer": opt.name}, sort_keys=True)}
        )
        self.out_infos = {i.name: i for i in infos}
        self.out = bytearray(sum(i.nbytes for i in infos))
        self.old: dict[str, TensorInfo] = {}
        if previous_header is not None:
            self.old = {t.name: t for t in previous_header.tensors}
            for name, (dtype, shape) in specs.items():
                t = self.old.get(name)
                if t is None or t.dtype != dtype or t.shape != shape:
                    raise _bad_state(source, f"tensor {name!r} missing or of another shape")

    def apply(
        self, info: TensorInfo, start: int, count: int, x: np.ndarray, combined: np.ndarray
    ) -> np.ndarray:
        """One server step for elements [start, start+count) of ``info``; records new state."""
        if not steps_tensor(info.name, True):
            return combined
        state = {}
        for slot in self.opt.slots:
            key = f"{slot}.{info.name}"
            if self.previous is not None:
                old = self.old[key]
                state[slot] = to_float64(old.dtype, self.previous.chunk(old, start, count))
            else:
                state[slot] = self.opt.initial(slot, count)
        x_new, new_state = self.opt.step(x, combined, state)
        for slot, values in new_state.items():
            target = self.out_infos[f"{slot}.{info.name}"]
            view = np.frombuffer(self.out, dtype=np.float32, count=info.numel, offset=target.begin)
            view[start : start + count] = values.astype(np.float32)
        return x_new

    def close(self) -> None:
        if self.previous is not None:
            self.previous.close()

    def state_bytes(self) -> bytes:
        return self.header_bytes + bytes(self.out)

    def sha256(self) -> str:
        return hashlib.sha256(self.header_bytes + self.out).hexdigest()

    def write(self, path: Path) -> str:
        """Write the new state atomically; return its sha256."""
        with atomic_writer(path) as fh:
            fh.write(self.header_bytes)
            fh.write(self.out)
        return self.sha256()


def previous_state(path: Path, sha256: str) -> tuple[Mapped, Header]:
    """Open the state file a provenance names, refusing it unless its sha256 matches."""
    if not path.is_file():
        raise _bad_state(path, "the file is missing")
    if sha256_file(path) != sha256:
        raise _bad_state(path, "its sha256 differs from the one the package provenance records")
    with path.open("rb") as fh:
        header = read_state_header(fh, path.stat().st_size, str(path))
    return Mapped(path, header.data_start), header


def in_memory_state(data: bytes) -> tuple[Mapped, Header]:
    """A state held in memory (``flsilo simulate``), read exactly like a state file."""
    header = read_state_header(io.BytesIO(data), len(data), "<memory>")
    return Mapped(None, header.data_start, data), header
