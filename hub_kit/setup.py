"""``flsilo hub init``: a new hub workspace and its signed round-0 package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flsilo.format import manifest as mf
from flsilo.format.startinfo import start_record
from flsilo.format.tensorsets import ROUND_TRAIN, frozen_tensors, unmatched_globs
from flsilo.fs.atomic import atomic_directory, write_text
from flsilo.fs.folders import require_folder
from flsilo.models.backbone import with_start
from flsilo.plans import federation as fed
from flsilo.plans.federation import FederationConfig
from flsilo.plans.plan import dp_of, has_closed_form, plan_for_round, task_spec
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.signing.keys import PassphraseSource, PublicKey, load_private_key
from flsilo.tasks import model_task, output_size, task_for
from hub_kit.anchor import sign_log
from hub_kit.eventlog import GENESIS, EventLog
from hub_kit.events import Init
from hub_kit.packaging import package_manifest, write_package
from hub_kit.privacy import check_config as check_dp_config
from hub_kit.privacy import dp_plan, refuse_batchnorm
from hub_kit.state import HubState, fold, release_policy, render_allowed_signers
from hub_kit.strategies import parse_strategy
from hub_kit.weighting import NO_CAP_AT_INIT
from hub_kit.workspace import HUB_FILE, hub_toml


def initial_weights(
    config: FederationConfig, init_weights: Path | None
) -> tuple[dict, str, tuple[str, ...]]:
    """Seeded fresh weights, or a pretrained start; returns raw tensors, code digest, head."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from flsilo.models.norms import live_modules
    from flsilo.models.registry import build_model, code_digest, head_tensor_names
    from flsilo.models.torchio import load_weights, state_to_raw

    torch.manual_seed(config.plan.seed)
    spec = task_spec(config.plan)
    model = build_model(config.model, config.input_shape, output_size(spec, config.classes))
    problem = task_for(spec).model_problem(model, config.input_shape, spec)
    if problem is not None:
        raise UsageError(
            f"model {config.model!r} does not fit task {spec.name}: {problem}",
            code=Code.BAD_MODEL_SPEC,
            hint="see docs/reference/models.md for the models each task takes",
        )
    problem = task_for(spec).dp_problem(model) if dp_plan(config) is not None else None
    if problem is not None:  # before BatchNorm: no freezing or norm=group would help
        raise UsageError(
            f"model {config.model!r} cannot be trained with DP-SGD: {problem}",
            code=Code.DP_MODEL,
            hint="see docs/reference/models.md for the models DP-SGD trains per task "
            "(detect: --model detector)",
        )
    if init_weights is not None:
        try:
            tensors = load_file(str(init_weights))
        except (OSError, SafetensorError) as exc:
            raise UsageError(
                f"cannot read initial weights ({exc})",
                path=init_weights,
                code=Code.INIT_WEIGHTS,
                hint="give a plain .safetensors file holding the model's state dict",
            ) from exc
        load_weights(model, tensors, str(init_weights))
    if config.plan.adapters:  # A drawn here, once, from the plan's seed; B zero
        _add_adapters(model, config.plan.adapters)
    try:
        head = head_tensor_names(model)
    except ValueError:
        head = ()
    if dp_plan(config) is not None:  # frozen BatchNorm runs in eval mode: no samples mix
        plan = config.plan
        frozen = frozen_tensors(model.state_dict(), plan.freeze, plan.adapters, head)
        refuse_batchnorm(live_modules(model, frozen), config.model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state_to_raw(state), code_digest(config.model), head


def _add_adapters(model: Any, text: str) -> None:
    from flsilo.models.adapters import add_adapters

    try:
        add_adapters(model, text)
    except ValueError as exc:
        raise UsageError(
            f"--adapters {text!r}: {exc}",
            code=Code.BAD_ADAPTERS,
            hint="e.g. --adapters lora:r=8 or lora:r=8,alpha=16,targets=layer4.*; "
            "targets are globs over layer names ('flsilo inspect' lists the tensors)",
        ) from exc


def _start(record: dict | None, path: Path | None) -> Any:
    """The typed provenance of a ``backbone import`` start file (None without one)."""
    if record is None:
        return None
    try:
        return start_record(record)
    except ValueError as exc:
        raise UsageError(
            f"the start file's provenance record does not fit: {exc}",
            path=path,
            code=Code.INIT_WEIGHTS,
            hint="rerun flsilo backbone import with this flsilo",
        ) from exc


def check_task(config: FederationConfig) -> None:
    """The plan's task must be one this flsilo can load, and fit the plan's other settings."""
    spec = task_spec(config.plan)
    task = task_for(spec)
    problem = task.spec_problem(spec, config.classes)
    if problem is None and task.needs_classes and not config.classes:
        problem = f"task {spec.name} needs --classes"
    if problem is None and dp_of(config.plan) is not None and not task.supports_dp:
        problem = f"task {spec.name} cannot be trained with DP-SGD (its loss is not per sample)"
    if problem is None and has_closed_form(config.schedule.kind):
        solver = config.plan.head_solver.partition(":")[0]
        if not task.closed_form:
            problem = f"task {spec.name} has no closed-form head (use a periodic schedule)"
        elif solver not in task.closed_form_solvers:
            problem = f"task {spec.name} solves its head by {', '.join(task.closed_form_solvers)}"
    if problem is not None:
        raise UsageError(
            f"federation settings are not valid: {problem}",
            code=Code.BAD_CONFIG,
            hint="see docs/how-to/hub-administrator.md, choosing a task",
        )


def check_heads_plan(config: FederationConfig, raw: dict, head: tuple[str, ...]) -> None:
    """Freeze globs must each match a tensor and leave some to train; closed-form needs a head."""
    freeze = config.plan.freeze
    bad_globs = unmatched_globs(raw, freeze)
    if bad_globs:
        raise UsageError(
            f"--freeze pattern {bad_globs[0]!r} matches no tensor of model {config.model!r}",
            code=Code.BAD_FREEZE,
            hint="patterns are shell globs over state-dict names; 'flsilo inspect' lists them",
        )
    if frozen_tensors(raw, freeze, config.plan.adapters, head) == set(raw):  # B and head too
        raise UsageError(
            "--freeze leaves no tensor to train",
            code=Code.BAD_FREEZE,
            hint="freeze the backbone only",
        )
    if not has_closed_form(config.schedule.kind):
        return
    shapes = [raw[n].shape for n in head]
    if len(head) != 2 or len(shapes[0]) != 2 or len(shapes[1]) != 1:
        raise UsageError(
            f"model {config.model!r} has no linear head with weight and bias for a closed-form "
            "schedule",
            code=Code.NO_HEAD,
            hint="end the model with nn.Linear(d, classes, bias=True), or set model.flsilo_head",
        )


def hub_init(
    root: Path,
    config: FederationConfig,
    key_path: Path,
    passphrase: PassphraseSource,
    init_weights: Path | None = None,
) -> Path:
    """Create HUB_DIR whole or not at all; return the round-0 package path."""
    require_folder(root, "the hub workspace", hint="choose a new folder; 'hub init' creates it")
    if root.exists() and any(root.iterdir()):
        raise UsageError(
            "hub directory already exists and is not empty",
            path=root,
            code=Code.EXISTS,
            hint="choose a new directory; an existing federation is never re-initialised",
        )
    parse_strategy(config.hub.strategy)
    check_task(config)
    check_dp_config(config)
    key = load_private_key(key_path, passphrase)
    public = PublicKey.from_key(key.public_key(), comment="flsilo hub")
    config, start = with_start(config, init_weights)  # a backbone import's normalisation
    raw, digest, head = initial_weights(config, init_weights)
    check_heads_plan(config, raw, head)
    model = mf.ModelInfo(
        spec=config.model,
        code_digest=digest,
        classes=config.classes,
        input_shape=config.input_shape,
        label_column=config.data.label_column,
        feature_columns=config.data.feature_columns,
        head=head,
        task=model_task(task_spec(config.plan)),
        adapters=config.plan.adapters,
        start=_start(start, init_weights),
    )
    with atomic_directory(root) as staging:
        fed.write(staging / fed.FEDERATION_FILE, config)
        write_text(staging / HUB_FILE, hub_toml(key_path, root, public.fingerprint))
        write_text(staging / "hub.pub", public.openssh_line() + "\n")
        for sub in ("packages", "rounds", "inbox", "quarantine"):
            (staging / sub).mkdir()
        release = release_policy(HubState(), config.hub.release_signers)
        manifest = package_manifest(config, model, 0, None, None, release=release, log_head=GENESIS)
        path, sha = write_package(staging / "packages", manifest, raw, key)
        log = EventLog(staging / "events.jsonl")
        init = Init(
            config.federation,
            path.name,
            sha,
            public.openssh_line(),
            0,
            start,
            require_evaluations=config.hub.require_evaluations or None,  # left out at 0
        )
        log.append([init])
        write_text(staging / "allowed_signers", render_allowed_signers(fold(log.read())))
        sign_log(log.path, key)
    return root / "packages" / path.name


def init_warnings(config: FederationConfig) -> list[str]:
    """What a new federation leaves open that its administrator should decide on purpose:
    no cap on one site's weight share (federations with weight rounds; a statistics round
    is an exact sum, no one's weight to cap)."""
    schedule = config.schedule
    plans = (plan_for_round(config.plan, schedule, r) for r in range(schedule.rounds))
    weight_rounds = any(plan is not None and plan.kind == ROUND_TRAIN for plan in plans)
    return [NO_CAP_AT_INIT] if config.hub.max_weight_share is None and weight_rounds else []
