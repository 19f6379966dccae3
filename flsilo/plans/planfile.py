"""The plan as a reviewed file: ``hub init --config PLAN.toml`` and ``--print-config``.

A plan file has the schema of ``federation.toml`` (the top-level keys and the
``[schedule]``, ``[plan]``, ``[hub]`` and ``[data]`` tables, nested tables such as
``[plan.preprocess]`` included), so a federation can be reviewed and versioned before it is
made. It never holds the hub key, a passphrase or an output path. Options given on the
command line override the file's values one by one. ``template`` writes a commented
starting file from the dataclasses themselves, so a setting added to ``Plan`` or
``HubPolicy`` appears in it without extra work.
"""

from __future__ import annotations

import dataclasses
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flsilo.format.manifest import FORMAT_VERSION, to_jsonable
from flsilo.plans import federation as fed
from flsilo.plans.plan import SEQUENCE, Plan, Schedule
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError, UsageError

NEVER_IN_FILE = ("key", "passphrase", "passphrase_file", "out", "hub_dir")
"""Settings a plan file must not hold: secrets and where the command writes."""

EXAMPLE = fed.FederationConfig(
    federation="my-federation",
    model="cnn",
    classes=("normal", "abnormal"),
    input_shape=(1, 64, 64),
    schedule=Schedule(kind="periodic", rounds=5, local_epochs=(1, 1, 1, 1, 1)),
    plan=Plan(local_epochs=1, batch_size=32),
)

TOP_HELP = {
    "format_version": "federation.toml format version this file follows",
    "federation": "federation id: lower-case letters, digits, '-', '.', '_' (required; "
    "name yours: hub init refuses this example's)",
    "model": "logreg, mlp[:hidden=200x200], cnn, resnet, crnn, detector, torchvision:NAME, "
    "timm:NAME, or package.module:factory (docs/reference/models.md; required)",
    "classes": "class names in index order (required)",
    "input_shape": "[C, H, W] for images, [features] for tables (required)",
}
SCHEDULE_HELP = {
    "kind": "one-shot, few-shot, periodic, closed-form, closed-form+periodic, ...",
    "rounds": "rounds in all (a closed-form schedule counts its statistics round)",
    "local_epochs": "local epochs of each round: one value per round",
}
PLAN_HELP = {
    "batch_size": "examples per step",
    "kind": "set for each round by the schedule (train or statistics): leave it as it is",
}
DATA_HELP = {
    "label_column": "CSV tables: the label column",
    "feature_columns": "CSV tables: feature columns in order ([] = every other column)",
}


def load(path: Path) -> dict[str, Any]:
    """The parsed plan file, checked for the settings it must never hold."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(
            "plan file not found",
            path=path,
            code=Code.BAD_CONFIG,
            hint="write one with 'flsilo hub init --print-config > plan.toml' and edit it",
        ) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise MalformedInputError(
            f"cannot read the plan file ({exc})",
            path=path,
            code=Code.BAD_CONFIG,
            hint="it must be TOML with the schema of federation.toml "
            "('flsilo hub init --print-config' writes one)",
        ) from exc
    tables = [data, *(v for v in data.values() if isinstance(v, dict))]
    found = sorted({k for t in tables for k in NEVER_IN_FILE if k in t})
    if found:
        raise UsageError(
            f"the plan file holds {', '.join(found)}, which never belongs in a plan",
            path=path,
            code=Code.BAD_CONFIG,
            hint="give the key, passphrase and output on the command line; remove them from "
            "the file",
        )
    data.setdefault("format_version", FORMAT_VERSION)
    return data


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it, table by table (nested tables too)."""
    out: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build(data: dict[str, Any], path: Path) -> fed.FederationConfig:
    """The federation a (merged) plan file describes, checked like ``federation.toml``."""
    plan = data.get("plan")
    if isinstance(plan, Mapping) and plan.get("task") == SEQUENCE:
        data.setdefault("classes", [])  # the charset names a sequence model's outputs
    missing = [k for k in ("federation", "model", "classes", "input_shape") if k not in data]
    if missing:
        raise UsageError(
            f"no {', '.join(missing)} in the plan file or on the command line",
            path=path,
            code=Code.BAD_CONFIG,
            hint="set them in the file or pass --"
            + " --".join(m.replace("_", "-") for m in missing),
        )
    try:
        return fed.parse(dict(data), path)
    except MalformedInputError as exc:
        raise MalformedInputError(
            exc.message,
            path=path,
            code=Code.BAD_CONFIG,
            hint="compare it with 'flsilo hub init --print-config', which lists every setting",
        ) from exc


def schedule_table(schedule: Schedule) -> dict[str, Any]:
    return dict(to_jsonable(schedule))


def template(help_texts: Mapping[str, str]) -> str:
    """A commented starting plan file: every setting with its default and what it does.

    ``help_texts`` maps a field name to its one-line help (the command-line option's), so
    the file and ``--help`` say the same; fields without one get their type's name.
    """
    lines = [
        "# flsilo federation plan. Review it, then:",
        "#   flsilo hub init HUB_DIR --config plan.toml --key keys/hub",
        "# Options given on the command line override this file. It never holds the key,",
        "# a passphrase or an output path. Same schema as the federation.toml hub init writes.",
        "",
    ]
    top = {"format_version": FORMAT_VERSION}
    top.update({k: to_jsonable(getattr(EXAMPLE, k)) for k in _top_level()})
    lines += _table_lines(None, top, TOP_HELP)
    for table in fed.TABLES:
        value = getattr(EXAMPLE, table)
        values = to_jsonable(value)
        if table == "plan":
            del values["local_epochs"]  # per round, in [schedule]
            values.setdefault("adapters", "")  # manifests leave it out while empty
            for key in ("task", "thresholds", "charset", "max_length"):  # likewise at default
                values.setdefault(key, to_jsonable(getattr(value, key)))
        helps = {"schedule": SCHEDULE_HELP, "data": DATA_HELP}.get(
            table, {**PLAN_HELP, **help_texts}
        )
        lines += ["", *_table_lines(table, values, helps, value)]
    return "\n".join(lines) + "\n"


def _top_level() -> list[str]:
    return [f.name for f in dataclasses.fields(fed.FederationConfig) if f.name not in fed.TABLES]


def _table_lines(
    name: str | None, values: dict[str, Any], helps: Mapping[str, str], obj: Any = None
) -> list[str]:
    """``[name]`` and its keys; nested tables after them as ``[name.key]``."""
    lines = [f"[{name}]"] if name else []
    nested: list[tuple[str, dict[str, Any], Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            nested.append((key, value, getattr(obj, key, None)))
            continue
        lines += _key_lines(key, value, helps.get(key) or _type_name(obj, key))
    for key, value, inner in nested:
        lines += ["", *_table_lines(f"{name}.{key}" if name else key, value, helps, inner)]
    return lines


def _key_lines(key: str, value: Any, help_text: str) -> list[str]:
    comment = "\n".join(textwrap.wrap(help_text, 86, initial_indent="# ", subsequent_indent="# "))
    if value is None:  # TOML has no null: an unset optional setting stays commented out
        return [comment, f"# {key} = (unset)"]
    return [comment, f"{key} = {fed.toml_value(value)}"]


def _type_name(obj: Any, key: str) -> str:
    if obj is None or not dataclasses.is_dataclass(obj):
        return key.replace("_", " ")
    for f in dataclasses.fields(obj):
        if f.name == key:
            return f"{key.replace('_', ' ')} ({f.type})"
    return key
