"""``federation.toml``: what hub and sites agree on: identity, model, schedule, plan, hub policy, data.

The file has a few top-level keys (format version, federation id, model, classes, input
shape) and one table per part: ``[schedule]``, ``[plan]``, ``[hub]`` and ``[data]``. Each
table is one frozen dataclass; ``FederationConfig`` validates the whole once, when it is
built, whether from options (``hub init``, ``demo``) or from the file.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flsilo.format.manifest import (
    FORMAT_VERSION,
    ID_PATTERN,
    UPGRADE_HINT,
    V3_PLAN_FIELDS,
    SchemaError,
    from_jsonable,
    to_jsonable,
    version_refusal,
)
from flsilo.fs.atomic import write_text
from flsilo.fs.untrusted import MAX_SMALL_FILE_BYTES, read_bounded
from flsilo.plans.plan import (
    SEQUENCE,
    STATS,
    Plan,
    Schedule,
    plan_for_round,
    plan_problem,
    schedule_problem,
)
from flsilo.plans.preprocessing import needs_statistics, shape_problem
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError, UsageError, WorkspaceError

FEDERATION_FILE = "federation.toml"
TABLES = ("schedule", "plan", "hub", "data")


@dataclass(frozen=True)
class DataSpec:
    """How sites read tables: which CSV column holds the label, which hold features."""

    label_column: str = "label"
    feature_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class HubPolicy:
    """How the hub admits and combines bundles: hub-side rules that no site trains by.

    To add a hub setting: a field with a default here, a rule in ``hub_policy_problem``,
    and one line in ``flsilo/cli/options.py`` for its ``hub init`` option.
    """

    min_sites: int = 1
    max_samples: int = 100_000_000
    strategy: str = "fedavg"
    max_staleness: int = 0
    staleness_discount: float = 0.5
    norm_gate: float | None = None
    """Quarantine an update whose norm exceeds this multiple of the round's median norm."""
    cosine_gate: float | None = None
    """Quarantine an update whose cosine to the round's median update is below this."""
    drift_threshold: float = 1.0
    """Flag a site whose input summary lies further than this from the others' (hub_kit.drift)."""
    max_weight_share: float | None = None
    """Clip any one site's share of the total weight to this fraction."""
    package_ttl: int = 90
    """Days a package stays fresh for training (0: never expires); final packages never do."""
    release_signers: int = 0
    """Release officers who must sign the final package (0: no release sign-off)."""
    require_evaluations: int = 0
    """Sites whose signed evaluation reports on the final package must verify before it is
    final for use (0: final when made); recorded in the log's init event."""
    server_optimizer: str = "none"
    server_lr: float | None = None
    server_momentum: float | None = None
    server_betas: tuple[float, ...] | None = None
    server_tau: float | None = None


SERVER_OPTIMIZERS = ("none", "fedavgm", "fedadam", "fedyogi")


def server_problem(hub: HubPolicy) -> str | None:
    """The first rule the server optimizer settings break, or None (None means a default)."""
    if hub.server_optimizer not in SERVER_OPTIMIZERS:
        return f"server_optimizer must be one of {', '.join(SERVER_OPTIMIZERS)}"
    if hub.server_lr is not None and not hub.server_lr > 0:
        return "server_lr (--server-lr) must be > 0"
    if hub.server_momentum is not None and not 0 <= hub.server_momentum < 1:
        return "server_momentum (--server-momentum) must be in [0, 1)"
    betas = hub.server_betas
    if betas is not None and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
        return "server_betas (--server-betas) must be two values B1,B2 in [0, 1)"
    if hub.server_tau is not None and not hub.server_tau > 0:
        return "server_tau (--server-tau) must be > 0"
    return None


def hub_policy_problem(hub: HubPolicy) -> str | None:
    """The first rule ``hub`` breaks, in words, or None when it is sound."""
    if hub.min_sites < 1:
        return "min_sites (--min-sites) must be at least 1"
    if hub.max_samples < 1:
        return "max_samples (--max-samples) must be at least 1"
    if hub.max_staleness < 0 or not 0 <= hub.staleness_discount <= 1:
        return "max_staleness must be >= 0 and staleness_discount in [0, 1]"
    if hub.norm_gate is not None and not hub.norm_gate > 0:
        return "norm_gate (--norm-gate) must be a positive multiple of the median update norm"
    if hub.cosine_gate is not None and not -1 < hub.cosine_gate < 1:
        return "cosine_gate (--cosine-gate) must be a cosine in (-1, 1)"
    if not hub.drift_threshold > 0:
        return "drift_threshold (--drift-threshold) must be above 0"
    if hub.max_weight_share is not None and not 0 < hub.max_weight_share <= 1:
        return "max_weight_share (--max-weight-share) must be a fraction in (0, 1]"
    if hub.package_ttl < 0 or hub.release_signers < 0:
        return "package_ttl (--package-ttl) and release_signers (--release-signers) must be >= 0"
    if hub.require_evaluations < 0:
        return "require_evaluations (--require-evaluations) must be >= 0"
    return server_problem(hub)


@dataclass(frozen=True)
class FederationConfig:
    """The whole agreement, validated once on construction.

    ``plan`` is the plan of round 0; its ``local_epochs`` always equals the schedule's
    first value (the schedule owns local epochs, which may change per round).
    """

    federation: str
    model: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    schedule: Schedule
    plan: Plan
    hub: HubPolicy = field(default_factory=HubPolicy)
    data: DataSpec = field(default_factory=DataSpec)

    def __post_init__(self) -> None:
        problem = config_problem(self)
        if problem is not None:
            raise UsageError(
                f"federation settings are not valid: {problem}",
                code=Code.BAD_CONFIG,
                hint="fix the option (or federation.toml field) of the same name",
            )
        first = self.schedule.local_epochs[0]
        if self.plan.local_epochs != first:
            object.__setattr__(self, "plan", dataclasses.replace(self.plan, local_epochs=first))

    def plan_for_round(self, round_: int) -> Plan | None:
        """The plan the package of ``round_`` carries; None for the final package."""
        return plan_for_round(self.plan, self.schedule, round_)


def config_problem(config: FederationConfig) -> str | None:
    """The first rule the configuration breaks, in words, or None when it is sound."""
    if not ID_PATTERN.match(config.federation):
        return (
            f"federation id {config.federation!r} is not valid "
            "(lower-case letters, digits, '-', '.', '_'; at most 63)"
        )
    if not config.model.strip():
        return "model spec is empty"
    names = config.classes
    if config.plan.task == SEQUENCE:
        if names:
            return "the sequence task takes no classes (its charset defines the outputs)"
    elif len(names) < 2 or len(set(names)) != len(names) or not all(c.strip() for c in names):
        return "classes needs at least two distinct, non-empty names (e.g. normal,pneumonia)"
    if not config.input_shape or any(d < 1 for d in config.input_shape):
        return "input shape needs positive sizes: C,H,W for images or the feature count"
    return (
        schedule_problem(config.schedule)
        or plan_problem(dataclasses.replace(config.plan, local_epochs=1))
        or hub_policy_problem(config.hub)
        or shape_problem(config.plan.preprocess, config.input_shape, config.data.feature_columns)
        or stats_problem(config)
    )


def stats_problem(config: FederationConfig) -> str | None:
    """The federation's statistics need a ``stats`` round, which comes first."""
    pre = config.plan.preprocess
    if needs_statistics(pre) and not config.schedule.kind.startswith(STATS):
        which = next(
            f"--{name} {value}"
            for name, value in (
                ("normalize", pre.normalize),
                ("standardize", pre.standardize),
                ("impute", pre.impute),
            )
            if value == "federation" or value.startswith("mean")
        )
        return f"{which} needs the federation's statistics: a stats round first (--schedule stats+periodic:R)"
    return None


# ---------------------------------------------------------------------------------------
# The file


def toml_value(value: Any) -> str:
    """One TOML value: a bool, number, string or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def dump_toml(values: dict[str, Any], comment: str | None = None) -> str:
    """Flat ``key = value`` TOML (None values left out), under an optional comment line."""
    lines = [f"# {comment}"] if comment else []
    lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def to_toml(config: FederationConfig) -> str:
    top = {"format_version": FORMAT_VERSION}
    top.update({name: to_jsonable(getattr(config, name)) for name in _top_level_fields()})
    parts = [
        dump_toml(
            top,
            "flsilo federation: agreed by the hub and every site. Written by 'flsilo hub init'.",
        )
    ]
    for table in TABLES:
        values = to_jsonable(getattr(config, table))
        if table == "plan":
            del values["local_epochs"]  # per round, in [schedule]
        inner = {k: values.pop(k) for k in list(values) if isinstance(values[k], dict)}
        parts.append(f"[{table}]\n{dump_toml(values)}")
        parts += [f"[{table}.{k}]\n{dump_toml(v)}" for k, v in inner.items()]
    return "\n".join(parts)


def _top_level_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(FederationConfig) if f.name not in TABLES]


def write(path: Path, config: FederationConfig) -> None:
    write_text(path, to_toml(config))


def _bytes(path: Path) -> bytes:
    """A settings file's bytes, read bounded: a kit's federation.toml comes on a stick."""
    try:
        return read_bounded(path, MAX_SMALL_FILE_BYTES, follow=True)
    except MalformedInputError as exc:
        if exc.code == Code.MISSING:
            raise FileNotFoundError(errno.ENOENT, "not found", str(path)) from exc
        raise


def _text(path: Path) -> str:
    return _bytes(path).decode("utf-8")


_LOADED: dict[bytes, FederationConfig] = {}
"""The configurations built in this process, keyed by the exact bytes of the file they were
built from: a command reads its federation.toml several times (workspace, kit, plan, each
verified artifact's checks), and building one means parsing TOML and checking every field.
A file whose bytes differ in any way is a new key and is parsed and checked afresh; the
configuration is frozen all the way down (tuples, frozen dataclasses), so sharing it is safe.
Failures are never kept: each names the path it was read from."""
_LOADED_MAX = 32


def load(path: Path) -> FederationConfig:
    try:
        raw = _bytes(path)
        known = _LOADED.get(raw)
        if known is not None:
            return known
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError as exc:
        raise MalformedInputError(
            f"{FEDERATION_FILE} not found",
            path=path,
            code=Code.NO_FEDERATION,
            hint="is this a flsilo hub workspace or site kit?",
        ) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise MalformedInputError(
            f"cannot read {FEDERATION_FILE} ({exc})", path=path, code=Code.BAD_FEDERATION
        ) from exc
    config = parse(data, path)
    if len(_LOADED) >= _LOADED_MAX:
        _LOADED.clear()
    _LOADED[raw] = config
    return config


def parse(data: dict[str, Any], path: Path) -> FederationConfig:
    """Build the configuration from the parsed TOML of ``path``, refusing other versions."""
    version = data.pop("format_version", 1)
    refusal = version_refusal(version, FEDERATION_FILE)
    if refusal is not None:
        why, hint = refusal
        if hint != UPGRADE_HINT:
            hint = (
                "it was written by another flsilo release; create the federation again with "
                "this release's 'flsilo hub init' (docs/reference/artifact-format.md)"
            )
        raise MalformedInputError(why, path=path, code=Code.FEDERATION_VERSION, hint=hint)
    plan = data.get("plan")
    if version == 2 and isinstance(plan, dict) and any(k in plan for k in V3_PLAN_FIELDS):
        raise _bad(path, "a version-2 [plan] holds version-3 tables")
    if isinstance(plan, dict):
        if "local_epochs" in plan:
            raise _bad(path, "[plan] has local_epochs; local epochs per round live in [schedule]")
        data["plan"] = {"local_epochs": 1, **plan}  # replaced by the schedule's first value
    try:
        config: FederationConfig = from_jsonable(FederationConfig, data, "federation")
    except SchemaError as exc:
        raise _bad(path, str(exc)) from exc
    except UsageError as exc:
        raise _bad(path, exc.message) from exc
    return config


def _bad(path: Path, why: str) -> MalformedInputError:
    return MalformedInputError(
        why,
        path=path,
        code=Code.BAD_FEDERATION,
        hint="this file is written by 'flsilo hub init'; restore it from the hub or kit",
    )


def read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(_text(path))
    except FileNotFoundError as exc:
        raise WorkspaceError(
            f"{path.name} not found",
            path=path,
            code=Code.NOT_A_WORKSPACE,
            hint=f"is this a {what}?",
        ) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise MalformedInputError(f"cannot read {path.name} ({exc})", path=path) from exc
