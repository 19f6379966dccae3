"""``federation.toml``: what hub and sites agree on (id, model, classes, input, data, plan)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flsilo.atomic import write_text
from flsilo.errors import MalformedInputError, WorkspaceError
from flsilo.manifest import SchemaError, from_jsonable

FEDERATION_FILE = "federation.toml"


@dataclass(frozen=True)
class DataSpec:
    """How sites read tables: which CSV column holds the label, which hold features."""

    label_column: str = "label"
    feature_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class FederationConfig:
    federation: str
    model: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    schedule: str = "one-shot"
    local_epochs: tuple[int, ...] = (1,)
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    warmup_steps: int = 0
    fedprox_mu: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    min_sites: int = 1
    max_samples: int = 100_000_000
    strategy: str = "fedavg"
    max_staleness: int = 0
    staleness_discount: float = 0.5
    data: DataSpec = field(default_factory=DataSpec)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def dump_toml(values: dict[str, Any], comment: str | None = None) -> str:
    """Flat ``key = value`` TOML (None values left out), under an optional comment line."""
    lines = [f"# {comment}"] if comment else []
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def to_toml(config: FederationConfig) -> str:
    flat = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "data"}
    text = dump_toml(
        flat, "flsilo federation: agreed by the hub and every site. Written by 'flsilo hub init'."
    )
    return f"{text}\n[data]\n{dump_toml(dataclasses.asdict(config.data))}"


def write(path: Path, config: FederationConfig) -> None:
    write_text(path, to_toml(config))


def load(path: Path) -> FederationConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MalformedInputError(
            f"{FEDERATION_FILE} not found",
            path=path,
            code="no-federation",
            hint="is this a flsilo hub workspace or site kit?",
        ) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MalformedInputError(
            f"cannot read {FEDERATION_FILE} ({exc})", path=path, code="bad-federation"
        ) from exc
    try:
        config: FederationConfig = from_jsonable(FederationConfig, data, "federation")
    except SchemaError as exc:
        raise MalformedInputError(
            str(exc),
            path=path,
            code="bad-federation",
            hint="this file is written by 'flsilo hub init'; restore it from the hub or kit",
        ) from exc
    return config


def read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise WorkspaceError(
            f"{path.name} not found", path=path, code="not-a-workspace", hint=f"is this a {what}?"
        ) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MalformedInputError(f"cannot read {path.name} ({exc})", path=path) from exc
