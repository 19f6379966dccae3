"""The plan sites train by and the schedule of rounds: types, parsing, checks, per-round plan.

``Plan`` is the one description of "how a site trains" that ``federation.toml`` (its
``[plan]`` table), ``hub init``, ``simulate``, ``demo`` and every package manifest share.
To add a plan setting: add a field with a default here (and a rule to ``check_plan``), and
one line to ``flsilo/cli/options.py`` for its command-line option. The TOML table, the
manifest and both commands pick it up from the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from flsilo.format.tensorsets import (
    ROUND_FEDSTATS,
    ROUND_STATISTICS,
    ROUND_TRAIN,
    RoundKind,
    parse_solver,
)
from flsilo.plans.preprocessing import Augment, Preprocess, augment_problem, preprocess_problem
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError

OPTIMIZERS = ("sgd", "adam", "adamw")
MERGES = ("average", "fisher")
SCHEDULE_KINDS = ("one-shot", "few-shot", "periodic")
CLOSED_FORM = "closed-form"
"""A statistics round (closed-form head), alone or before ``+periodic:R`` / ``+few-shot:R``."""
STATS = "stats"
"""A federation-statistics round (``[plan.preprocess]`` normalisation) before the schedule."""
STATS_PREFIX = STATS + "+"
CLOSED_FORM_KINDS = (CLOSED_FORM, f"{CLOSED_FORM}+periodic", f"{CLOSED_FORM}+few-shot")
CLASSIFY = "classify"
MULTILABEL = "multilabel"
SEQUENCE = "sequence"
"""Strings per sample (``flsilo.tasks.sequence``): no classes, the charset names the outputs."""
BUILTIN_TASKS = (CLASSIFY, MULTILABEL, "sequence", "detect")
"""The built-in tasks (``flsilo.tasks``); any other name is a ``package.module:task`` plug-in."""
PLUGIN_TASK = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
OMIT_DEFAULT = {"omit_default": True}
"""Field metadata: the field is left out of a manifest or TOML file while it holds its
default, so files written before the field existed keep their bytes (and mean the default)."""


@dataclass(frozen=True)
class Plan:
    """How every site trains in one round; travels inside the signed package."""

    local_epochs: int
    batch_size: int
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    warmup_steps: int = 0
    seed: int = 0
    fedprox_mu: float = 0.0
    val_fraction: float = 0.1
    # Differential privacy (DP-SGD at every site): on when a noise multiplier or a target
    # epsilon per round is set; the budget is the total epsilon per site (see DPPlan).
    dp_noise_multiplier: float = 0.0
    dp_epsilon: float = 0.0
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    dp_budget: float = 0.0
    merge: str = "average"
    """``fisher``: sites also ship their diagonal Fisher (``fisher.NAME`` tensors)."""

    freeze: tuple[str, ...] = ()
    """Globs of tensors that never train; bundles then omit them (a partial bundle)."""
    adapters: str = field(default="", metadata=OMIT_DEFAULT)
    """``lora:r=R[,alpha=A,targets=GLOBS]``: low-rank adapters on a frozen base (FFA-LoRA)."""
    head_solver: str = "ridge"
    """Closed-form schedules: ``ridge[:LAMBDA]`` or ``ncm``."""
    min_cell_size: int = 0
    """Statistics rounds: a site refuses when it holds 0 < count < this of some class."""
    kind: RoundKind = ROUND_TRAIN
    """Set per round by the schedule: ``train`` (weights), ``statistics`` (head statistics) or
    ``stats`` (input statistics)."""
    preprocess: Preprocess = field(default_factory=Preprocess)
    """``[plan.preprocess]``: how a file or a row becomes the model's input (format 3)."""
    augment: Augment = field(default_factory=Augment)
    """``[plan.augment]``: random changes to training samples only (format 3)."""
    task: str = field(default=CLASSIFY, metadata=OMIT_DEFAULT)
    """What a label is (``flsilo.tasks``): classify, multilabel, sequence, detect or a
    ``package.module:task`` plug-in. Absent from files written before tasks: classify."""
    thresholds: tuple[float, ...] = field(default=(), metadata=OMIT_DEFAULT)
    """multilabel: each finding's decision threshold on its probability (empty: 0.5 each)."""
    charset: str = field(default="", metadata=OMIT_DEFAULT)
    """sequence: the characters a string may hold (the model's outputs, with a blank)."""
    max_length: int = field(default=0, metadata=OMIT_DEFAULT)
    """sequence: the longest string a label may be."""


@dataclass(frozen=True)
class TaskSpec:
    """What a model's outputs mean: the task and its settings (``flsilo.tasks``).

    Carried by the plan (the fields of the same names) and, so that a final package says
    it too, by the manifest's model description (``ModelInfo.task``; absent: classify).
    """

    name: str = CLASSIFY
    thresholds: tuple[float, ...] = ()
    charset: str = ""
    max_length: int = 0


def task_spec(plan: Plan) -> TaskSpec:
    """The task settings of ``plan``."""
    return TaskSpec(plan.task, plan.thresholds, plan.charset, plan.max_length)


@dataclass(frozen=True)
class DPPlan:
    """A plan's differential privacy, as the site's accountant and the hub's gate see it.

    Exactly one of ``noise_multiplier`` (sigma) and ``epsilon_per_round`` (a target from
    which each site derives its own sigma) is positive. ``budget`` is the total epsilon per
    site over the whole federation, composed across rounds by ``accountant``.
    """

    clip: float
    delta: float
    budget: float
    noise_multiplier: float = 0.0
    epsilon_per_round: float = 0.0
    accountant: str = "rdp"


def dp_of(plan: Plan) -> DPPlan | None:
    """The plan's DP mechanism; None for a plan without differential privacy."""
    if plan.dp_noise_multiplier <= 0 and plan.dp_epsilon <= 0:
        return None
    return DPPlan(
        clip=plan.dp_clip,
        delta=plan.dp_delta,
        budget=plan.dp_budget,
        noise_multiplier=plan.dp_noise_multiplier,
        epsilon_per_round=plan.dp_epsilon,
    )


def without_dp(plan: Plan) -> Plan:
    """The same plan, trained without differential privacy (baselines, public pretraining)."""
    return replace(plan, dp_noise_multiplier=0.0, dp_epsilon=0.0, dp_budget=0.0)


def dp_problem(plan: Plan) -> str | None:
    """The first DP rule ``plan`` breaks, in words, or None."""
    if min(plan.dp_noise_multiplier, plan.dp_epsilon, plan.dp_budget) < 0:
        return "DP noise multiplier, epsilon and budget cannot be negative"
    if dp_of(plan) is None:
        if plan.dp_budget > 0:
            return "--dp-budget needs a DP mechanism: --dp-noise-multiplier or --dp-epsilon"
        return None
    if plan.dp_noise_multiplier > 0 and plan.dp_epsilon > 0:
        return "give one of --dp-noise-multiplier and --dp-epsilon (per round), not both"
    if plan.dp_budget <= 0:
        return "DP needs a total budget per site: --dp-budget EPS_TOTAL (e.g. 3)"
    if plan.dp_epsilon > plan.dp_budget:
        return "--dp-epsilon (per round) exceeds --dp-budget (total): no round could run"
    if not plan.dp_clip > 0 or not 0 < plan.dp_delta < 1:
        return "DP needs --dp-clip > 0 and --dp-delta in (0, 1)"
    if plan.fedprox_mu > 0:
        return "--fedprox-mu cannot be combined with DP-SGD (the accountant does not cover it)"
    if plan.kind != ROUND_TRAIN:
        return f"a DP plan allows only noisy training rounds, not '{plan.kind}' rounds"
    return None


@dataclass(frozen=True)
class Schedule:
    """How many rounds a federation runs, and the local epochs of each."""

    kind: str
    rounds: int
    local_epochs: tuple[int, ...]


def plan_problem(plan: Plan) -> str | None:
    """The first rule ``plan`` breaks, in words, or None when it is sound."""
    if plan.local_epochs < 1 or plan.batch_size < 1:
        return "plan needs local_epochs >= 1 and batch_size >= 1"
    if plan.optimizer not in OPTIMIZERS:
        return f"plan optimizer {plan.optimizer!r} is not one of {', '.join(OPTIMIZERS)}"
    if not (plan.lr > 0 and plan.weight_decay >= 0 and plan.fedprox_mu >= 0):
        return "plan needs lr > 0, weight_decay >= 0, fedprox_mu >= 0"
    if plan.momentum < 0 or plan.warmup_steps < 0:
        return "plan needs momentum >= 0 and warmup_steps >= 0"
    if not 0 <= plan.val_fraction < 1:
        return "plan val_fraction must be in [0, 1)"
    if plan.merge not in MERGES:
        return f"plan merge {plan.merge!r} is not one of {', '.join(MERGES)}"
    if plan.merge == "fisher" and plan.kind == ROUND_STATISTICS:
        return "--merge fisher needs rounds that train weights, not statistics rounds"
    if plan.merge == "fisher" and dp_of(plan) is not None:
        return "--merge fisher cannot be combined with DP-SGD (the Fisher is not privatised)"
    return (
        task_problem(plan)
        or dp_problem(plan)
        or heads_problem(plan)
        or preprocess_problem(plan.preprocess)
        or augment_problem(plan.augment)
    )


def task_problem(plan: Plan) -> str | None:
    """Rules of the task fields that need no task code (the task adds its own)."""
    if plan.task not in BUILTIN_TASKS and not PLUGIN_TASK.match(plan.task):
        return (
            f"task {plan.task[:60]!r} is not one of {', '.join(BUILTIN_TASKS)} "
            "nor a package.module:task plug-in"
        )
    if plan.thresholds and plan.task != MULTILABEL:
        return "thresholds (--thresholds) apply to the multilabel task only"
    if any(not (math.isfinite(t) and 0 < t < 1) for t in plan.thresholds):
        return "thresholds (--thresholds) must lie strictly between 0 and 1"
    if plan.max_length < 0:
        return "max_length (--max-length) cannot be negative"
    repeated = [ch for ch in dict.fromkeys(plan.charset) if plan.charset.count(ch) > 1]
    if repeated:
        return f"charset (--charset) lists {', '.join(map(repr, repeated))} more than once"
    if plan.task == "detect" and (plan.augment.crop > 0 or plan.augment.rotate > 0):
        return (
            "augment crop and rotate would move objects away from their boxes: a detect "
            "plan allows hflip, jitter and noise"
        )
    if plan.task == "detect" and plan.merge == "fisher":
        return "--merge fisher applies to classification (its Fisher is of class probabilities)"
    return None


def heads_problem(plan: Plan) -> str | None:
    """Rules of the frozen-backbone and closed-form-head settings."""
    if plan.min_cell_size < 0:
        return "min_cell_size (--min-cell-size) must be 0 or more"
    if any(not g.strip() for g in plan.freeze):
        return "freeze globs (--freeze) must not be empty"
    try:
        parse_solver(plan.head_solver)
    except ValueError as exc:
        return f"{exc} (--head-solver)"
    return None


def has_closed_form(kind: str) -> bool:
    """Whether a schedule kind holds a closed-form (head statistics) round."""
    return CLOSED_FORM in kind.split("+")


def after_stats(schedule: Schedule) -> Schedule | None:
    """The schedule that follows a ``stats`` round 0, or None when there is no stats round."""
    if not schedule.kind.startswith(STATS_PREFIX):
        return None
    return Schedule(
        schedule.kind[len(STATS_PREFIX) :], schedule.rounds - 1, schedule.local_epochs[1:]
    )


def schedule_problem(schedule: Schedule) -> str | None:
    """The first rule ``schedule`` breaks, in words, or None when it is sound."""
    then = after_stats(schedule)
    if then is not None:
        if then.kind in ("one-shot", "") or then.kind.startswith(STATS_PREFIX):
            return f"schedule kind {schedule.kind!r}: a stats round is followed by a schedule"
        return schedule_problem(then)
    kinds = SCHEDULE_KINDS + CLOSED_FORM_KINDS
    if schedule.kind not in kinds:
        return f"schedule kind {schedule.kind!r} is not one of {', '.join(kinds)}"
    single = schedule.kind in ("one-shot", CLOSED_FORM)
    if schedule.rounds < 1 or (single and schedule.rounds != 1):
        return "a schedule needs at least one round, and one-shot exactly one"
    if schedule.kind in CLOSED_FORM_KINDS[1:] and schedule.rounds < 2:
        return f"{schedule.kind} needs at least one training round after the statistics round"
    if len(schedule.local_epochs) != schedule.rounds or min(schedule.local_epochs) < 1:
        return "a schedule needs one local-epoch value >= 1 per round"
    return None


def parse_schedule(text: str, local_epochs: tuple[int, ...]) -> Schedule:
    """``one-shot`` is one round; ``few-shot:R`` and ``periodic:R`` are R rounds.

    ``local_epochs`` is one E for every round, or one per round (a decaying E, say).
    ``closed-form`` is one statistics round; ``closed-form+periodic:R`` (or ``+few-shot:R``)
    adds R training rounds after it, and ``local_epochs`` then counts those R only.
    """
    if text.startswith(STATS_PREFIX):
        rest = text[len(STATS_PREFIX) :]
        if rest in ("one-shot", STATS) or rest.startswith(STATS_PREFIX):
            raise UsageError(
                f"schedule {text!r}: a stats round is followed by periodic:R, few-shot:R, "
                "closed-form or closed-form+periodic:R",
                code=Code.BAD_SCHEDULE,
                hint="e.g. --schedule stats+periodic:10",
            )
        then = parse_schedule(rest, local_epochs)
        return Schedule(STATS_PREFIX + then.kind, then.rounds + 1, (1, *then.local_epochs))
    if text == CLOSED_FORM:
        return Schedule(kind=CLOSED_FORM, rounds=1, local_epochs=(1,))
    prefix = CLOSED_FORM + "+"
    if text.startswith(prefix) and not text.startswith(prefix + "one-shot"):
        then = parse_schedule(text[len(prefix) :], local_epochs)
        return Schedule(prefix + then.kind, then.rounds + 1, (1, *then.local_epochs))
    kind, _, count = text.partition(":")
    if kind not in SCHEDULE_KINDS or (kind == "one-shot") != (count == ""):
        raise UsageError(
            f"schedule {text!r} is not one-shot, few-shot:R, periodic:R, closed-form, "
            "closed-form+periodic:R or closed-form+few-shot:R (each but one-shot may follow "
            "'stats+')",
            code=Code.BAD_SCHEDULE,
            hint="e.g. --schedule periodic:10 --local-epochs 5",
        )
    try:
        rounds = 1 if kind == "one-shot" else int(count)
    except ValueError as exc:
        raise UsageError(
            f"schedule {text!r}: R must be a whole number", code=Code.BAD_SCHEDULE
        ) from exc
    if rounds < 1:
        raise UsageError("a schedule needs at least one round", code=Code.BAD_SCHEDULE)
    if not local_epochs or any(e < 1 for e in local_epochs):
        raise UsageError("local epochs must be at least 1", code=Code.BAD_SCHEDULE)
    if len(local_epochs) == 1:
        local_epochs = local_epochs * rounds
    if len(local_epochs) != rounds:
        raise UsageError(
            f"{len(local_epochs)} local-epoch values for {rounds} rounds",
            code=Code.BAD_SCHEDULE,
            hint="give one value, or exactly one per round",
        )
    return Schedule(kind=kind, rounds=rounds, local_epochs=tuple(local_epochs))


def schedule_text(schedule: Schedule) -> str:
    """The ``--schedule`` text of a schedule: ``one-shot``, ``closed-form`` or ``KIND:R``."""
    then = after_stats(schedule)
    if then is not None:
        return STATS_PREFIX + schedule_text(then)
    if schedule.kind in ("one-shot", CLOSED_FORM):
        return schedule.kind
    if schedule.kind.startswith(CLOSED_FORM):
        return f"{schedule.kind}:{schedule.rounds - 1}"
    return f"{schedule.kind}:{schedule.rounds}"


def plan_for_round(base: Plan, schedule: Schedule, round_: int) -> Plan | None:
    """The plan sites follow on the package of ``round_``; None for the final package.

    ``base`` is the federation's plan (its round-0 plan); a round changes only the local
    epochs (from the schedule) and the seed (base seed + round), and its kind: round 0 of a
    closed-form schedule is a statistics round, which uses every sample (no validation), and
    round 0 of a ``stats+`` schedule a federation-statistics round (the same); the schedule
    after it then runs from round 1.
    """
    if round_ >= schedule.rounds:
        return None
    then = after_stats(schedule)
    if then is not None:
        if round_ == 0:
            return replace(
                base, local_epochs=1, seed=base.seed, kind=ROUND_FEDSTATS, val_fraction=0.0
            )
        inner = plan_for_round(base, then, round_ - 1)
        assert inner is not None
        return replace(inner, seed=base.seed + round_)
    plan = replace(
        base,
        local_epochs=schedule.local_epochs[round_],
        seed=base.seed + round_,
        kind=ROUND_TRAIN,
    )
    if round_ == 0 and schedule.kind.startswith(CLOSED_FORM):
        return replace(plan, kind=ROUND_STATISTICS, val_fraction=0.0)
    return plan
