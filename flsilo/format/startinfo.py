"""Where a federation's starting weights came from: the ``backbone import`` record, typed.

``flsilo backbone import`` writes a provenance record into the start file it makes (see
``flsilo.models.backbone``); ``hub init --init-weights START`` copies it into the package
manifest's model section (``model.start``), so every package and bundle of the federation
names the published checkpoint it grew from (its sha256), the spec, the library versions
that imported it and the normalisation the backbone expects. ``flsilo inspect`` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flsilo.format.jsonable import SchemaError, from_jsonable


@dataclass(frozen=True)
class StartSource:
    """The published checkpoint: its file name, sha256 and tensor count."""

    file: str
    sha256: str
    tensors: int


@dataclass(frozen=True)
class StartNormalize:
    """The per-channel mean and standard deviation the backbone was trained with."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class StartRecord:
    """A ``backbone import`` provenance record, as the package carries it."""

    source: StartSource
    spec: str
    code: str
    input_shape: tuple[int, ...]
    classes: int
    dropped: tuple[str, ...] = ()
    libraries: dict[str, str] = field(default_factory=dict)
    normalize: StartNormalize | None = None


def start_record(record: dict) -> StartRecord:
    """The typed record of a start file's provenance; raises ValueError when it does not fit."""
    try:
        typed: StartRecord = from_jsonable(StartRecord, record, "provenance")
    except SchemaError as exc:
        raise ValueError(str(exc)) from exc
    return typed
