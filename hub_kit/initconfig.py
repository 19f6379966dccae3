"""``hub init``'s federation configuration: from its options, or from a reviewed plan file
with the options typed on the command line laid over it. The command line parses the
options; this builds and checks the :class:`flsilo.plans.federation.FederationConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flsilo.format.manifest import to_jsonable
from flsilo.plans import planfile
from flsilo.plans.federation import DataSpec, FederationConfig, HubPolicy
from flsilo.plans.plan import SEQUENCE, Plan, Schedule, parse_schedule, schedule_text
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError


@dataclass(frozen=True)
class InitOptions:
    """``hub init``'s options, parsed; ``None`` where not given."""

    hub: HubPolicy
    plan_settings: dict[str, Any] = field(default_factory=dict)
    """The plan's settings (``Plan`` fields, ``preprocess`` among them) from the options."""
    federation: str | None = None
    model: str | None = None
    classes: tuple[str, ...] | None = None
    input_shape: tuple[int, ...] | None = None
    schedule: str = "one-shot"
    local_epochs: tuple[int, ...] = (1,)
    batch_size: int = 32
    label_column: str = "label"
    feature_columns: tuple[str, ...] = ()
    given: frozenset[str] = frozenset()
    """The options typed on the command line: they override a plan file's values."""


def federation_config(options: InitOptions, plan_file: Path | None = None) -> FederationConfig:
    """The new federation's configuration: from PLAN_FILE with the typed options laid over
    it, or from the options alone (then the federation, model, classes and input shape are
    required)."""
    if plan_file is not None:
        return _from_file(plan_file, options)
    o = options
    missing = [
        f"--{n.replace('_', '-')}"
        for n, v in (
            ("federation", o.federation),
            ("model", o.model),
            ("classes", () if o.plan_settings.get("task") == SEQUENCE else o.classes),
            ("input_shape", o.input_shape),
        )
        if v is None
    ]
    if missing:
        raise UsageError(
            f"missing option{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            code=Code.BAD_CONFIG,
            hint="give them, or a plan file with --config (flsilo hub init --print-config)",
        )
    assert o.federation and o.model and o.input_shape  # checked above
    rounds = parse_schedule(o.schedule, o.local_epochs)
    return FederationConfig(
        federation=o.federation,
        model=o.model,
        classes=o.classes or (),
        input_shape=o.input_shape,
        schedule=rounds,
        plan=Plan(local_epochs=rounds.local_epochs[0], batch_size=o.batch_size, **o.plan_settings),
        hub=o.hub,
        data=DataSpec(label_column=o.label_column, feature_columns=o.feature_columns),
    )


def _from_file(path: Path, o: InitOptions) -> FederationConfig:
    """The plan file's federation with every option typed on the command line laid over it."""
    data = planfile.load(path)
    given = o.given
    top: dict[str, Any] = {}
    if "federation" in given:
        top["federation"] = o.federation
    if "model" in given:
        top["model"] = o.model
    if "classes" in given and o.classes is not None:
        top["classes"] = list(o.classes)
    if "input_shape" in given and o.input_shape is not None:
        top["input_shape"] = list(o.input_shape)
    if given & {"schedule", "local_epochs"}:
        current = data.get("schedule", {})
        text = o.schedule
        if "schedule" not in given and isinstance(current, dict):
            text = schedule_text(Schedule(current["kind"], current["rounds"], (1,)))
        epochs = o.local_epochs
        if "local_epochs" not in given and isinstance(current, dict):
            epochs = tuple(current.get("local_epochs", [1]))[:1]
        top["schedule"] = planfile.schedule_table(parse_schedule(text, epochs))
    plan = {k: to_jsonable(v) for k, v in o.plan_settings.items() if k in given}
    pre = o.plan_settings.get("preprocess")
    typed = [f.name for f in dataclasses.fields(pre) if f.name in given] if pre else []
    if typed:  # [plan.preprocess] options typed: laid over the file's table one by one
        plan["preprocess"] = {name: to_jsonable(getattr(pre, name)) for name in typed}
    if "batch_size" in given:
        plan["batch_size"] = o.batch_size
    hub_table = {
        f.name: to_jsonable(getattr(o.hub, f.name))
        for f in dataclasses.fields(o.hub)
        if f.name in given
    }
    data_table = {
        k: to_jsonable(v)
        for k, v in (
            ("label_column", o.label_column),
            ("feature_columns", list(o.feature_columns)),
        )
        if k in given
    }
    overrides = {**top, "plan": plan, "hub": hub_table, "data": data_table}
    config = planfile.build(planfile.merge(data, overrides), path)
    if config.federation == planfile.EXAMPLE.federation and "federation" not in given:
        # a federation's id and classes are signed into its log for good: the printed
        # template's placeholders are never made into one unreviewed
        raise UsageError(
            f"the plan file still names the printed template's example federation "
            f"({planfile.EXAMPLE.federation!r}): it has not been edited",
            path=path,
            code=Code.BAD_CONFIG,
            hint='set federation = "..." in it and review classes, input_shape and model '
            "(they are signed for good), or give --federation NAME",
        )
    return config
