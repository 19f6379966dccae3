"""Command-line options for plan and hub settings, defined once for ``hub init`` and ``simulate``.

Each ``Setting`` names a field of ``Plan`` or ``HubPolicy``; its default is the field's
default and its option is ``--field-name``. ``@with_settings()`` adds every setting's option
to a command and hands the command the values gathered: ``plan_settings`` (keyword
arguments for ``Plan``) and ``hub`` (a ``HubPolicy``). To add a setting, add the field to
its dataclass and one ``Setting`` line here; both commands get the option.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from flsilo.plans.federation import SERVER_OPTIMIZERS, HubPolicy
from flsilo.plans.plan import MERGES, Plan
from flsilo.plans.preprocessing import (
    INTENSITIES,
    Augment,
    Preprocess,
    parse_augment,
    parse_impute,
    parse_normalize,
    parse_resize,
    parse_window,
)
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError


@dataclass(frozen=True)
class Setting:
    """One option: the dataclass field it fills, its help, and how its text becomes a value."""

    name: str
    help: str
    option_type: Any = None  # the type typer parses; None: the field's own type
    parse: Callable[[Any], Any] | None = None  # option value -> field value
    simulate: bool = True  # offered by ``flsilo simulate`` too
    option_default: Any = None  # the option's default, when not the field's (None: the field's)


STRATEGY_HELP = (
    "fedavg, mean, median, trimmed-mean:BETA, multi-krum:F[,M], norm-bound:C, "
    "centered-clip:TAU, geomedian or median-of-means:G."
)

PLAN_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "task",
        "classify, multilabel, sequence, detect, or a plug-in package.module:task.",
    ),
    Setting(
        "thresholds",
        "multilabel: each finding's decision threshold, in --classes order (default 0.5 each).",
        option_type=str,
        parse=lambda text: _thresholds(text),
        option_default="",
    ),
    Setting("charset", "sequence: the characters a label may hold."),
    Setting("max_length", "sequence: the longest label, in characters."),
    Setting("optimizer", "sgd, adam or adamw."),
    Setting("lr", "Learning rate."),
    Setting("momentum", "SGD momentum."),
    Setting("nesterov", "Nesterov momentum for SGD."),
    Setting("weight_decay", "Weight decay."),
    Setting("warmup_steps", "Linear learning-rate warmup, in steps."),
    Setting("seed", "Seed of round 0; round r trains with seed + r."),
    Setting("fedprox_mu", "FedProx proximal term (0 = plain FedAvg)."),
    Setting("val_fraction", "Share of each site's data held out for validation."),
    Setting("dp_noise_multiplier", "DP-SGD at every site with this noise multiplier (sigma)."),
    Setting("dp_epsilon", "DP-SGD with this target epsilon per round; sites derive sigma."),
    Setting("dp_clip", "DP: per-sample gradient clipping norm."),
    Setting("dp_delta", "DP: delta of the (epsilon, delta) guarantee."),
    Setting("dp_budget", "DP: total epsilon per site; sites refuse rounds past it."),
    Setting(
        "freeze",
        "Tensors that never train (globs, e.g. 'stem.*,stages.*'); bundles omit them.",
        option_type=str,
        parse=lambda text: name_list(text),
        option_default="",
    ),
    Setting(
        "adapters",
        "lora:r=R[,alpha=A,targets=GLOBS]: low-rank adapters on a frozen base; only their B "
        "matrices and the head train, and bundles carry only those (FFA-LoRA).",
        simulate=False,
    ),
    Setting("head_solver", "Closed-form schedules: ridge[:LAMBDA] or ncm."),
    Setting("min_cell_size", "Closed-form: sites refuse to reveal a class with fewer samples."),
    Setting(
        "merge",
        "average, or fisher: sites also ship their diagonal Fisher and the hub merges by it.",
        parse=lambda v: parse_merge(v),
    ),
    Setting(
        "augment",
        "Training only: hflip,crop:SCALE,rotate:DEG,jitter:X,noise:SIGMA (any of them).",
        option_type=str,
        parse=lambda v: _augment(v),
        simulate=False,
        option_default="none",
    ),
)

PREPROCESS_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "resize",
        "Images: stretch, letterbox (pad) or shorter-side[:CROP_RATIO] (centre crop).",
        parse=lambda v: _checked("--resize", parse_resize, v),
    ),
    Setting("intensity", "Images: 8bit, 16bit or dicom.", parse=lambda v: _intensity(v)),
    Setting(
        "window",
        "DICOM: CENTER,WIDTH, or file (each file's own VOI window).",
        parse=lambda v: _checked("--window", parse_window, v),
    ),
    Setting(
        "normalize",
        "Images: none, imagenet, federation (a stats round's) or M1,M2,M3/S1,S2,S3.",
        parse=lambda v: _checked("--normalize", parse_normalize, v),
    ),
    Setting(
        "standardize",
        "Tables: none, or federation (per-feature, from a stats round).",
        parse=lambda v: _choice("--standardize", ("none", "federation"), v),
    ),
    Setting(
        "impute",
        "Tables: none, mean or constant:V, with ',indicator' for a 0/1 missing feature each.",
        parse=lambda v: _checked("--impute", parse_impute, v),
    ),
    Setting("frame_rate", "Video: frames sampled per second of each clip."),
    Setting("frames_per_clip", "Video: frames sampled evenly from each clip."),
)

HUB_SETTINGS: tuple[Setting, ...] = (
    Setting("min_sites", "Bundles needed before a round is aggregated.", simulate=False),
    Setting("max_samples", "Largest sample count a site may claim.", simulate=False),
    Setting("strategy", STRATEGY_HELP),
    Setting("max_staleness", "Accept bundles this many rounds late.", simulate=False),
    Setting("staleness_discount", "Weight factor per round of lateness.", simulate=False),
    Setting(
        "norm_gate",
        "Quarantine an update whose norm exceeds this multiple of the round's median norm.",
        simulate=False,
    ),
    Setting(
        "cosine_gate",
        "Quarantine a weight update whose cosine to the round's coordinate-wise median "
        "update is below this (-1 < MIN < 1; e.g. 0 refuses a sign-flipped update).",
        simulate=False,
    ),
    Setting(
        "drift_threshold",
        "Flag a site whose input summary (channel means and spreads, brightness and image "
        "sizes) lies further than this from the other sites' (1.0: a difference seen at a "
        "glance).",
        simulate=False,
    ),
    Setting(
        "max_weight_share",
        "Clip any one site's share of the total weight to this fraction (at least 1/sites).",
        simulate=False,
    ),
    Setting(
        "server_optimizer",
        "Server optimizer on the sites' pseudo-gradient: none, fedavgm, fedadam, fedyogi.",
        parse=lambda v: parse_server_optimizer(v),
    ),
    Setting("server_lr", "Server learning rate (default 1.0 fedavgm, 0.01 fedadam/fedyogi)."),
    Setting("server_momentum", "fedavgm server momentum (default 0.9)."),
    Setting(
        "server_betas",
        "fedadam/fedyogi B1,B2 (default 0.9,0.99).",
        option_type=str | None,
        parse=lambda v: parse_betas(v),
    ),
    Setting("server_tau", "fedadam/fedyogi adaptivity tau (default 0.001)."),
    Setting(
        "package_ttl",
        "Days a package stays fresh for training; sites refuse older ones unless told to "
        "(0: never expire). Final packages never expire.",
        simulate=False,
    ),
    Setting(
        "release_signers",
        "Release officers (enrolled with --role release) who must sign the final package "
        "(0: no sign-off).",
        simulate=False,
    ),
    Setting(
        "require_evaluations",
        "Sites whose signed evaluation reports on the final package must verify before it "
        "is final for use (0: final when made).",
        simulate=False,
    ),
)

_TAIL = ("passphrase_file", "json_out")  # options that stay last in --help


def _parameter(setting: Setting, owner: type) -> inspect.Parameter:
    fields = {f.name: f for f in dataclasses.fields(owner)}
    field = fields[setting.name]
    hints = inspect.get_annotations(owner, eval_str=True)
    kind = setting.option_type or hints[setting.name]
    default = field.default
    if setting.option_default is not None:
        default = setting.option_default
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[kind, typer.Option(help=setting.help)],
    )


def _value(setting: Setting, raw: Any) -> Any:
    return setting.parse(raw) if setting.parse else raw


def with_settings(*, simulate: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the plan and hub options to a command; it receives ``plan_settings`` and ``hub``."""
    hub_settings = tuple(s for s in HUB_SETTINGS if s.simulate or not simulate)
    plan_settings = tuple(s for s in PLAN_SETTINGS if s.simulate or not simulate)
    preprocess_settings = () if simulate else PREPROCESS_SETTINGS  # sim data is in memory

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(func, eval_str=True).parameters.values()
        kept = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in own
            if p.name not in ("plan_settings", "hub")
        ]
        added = [_parameter(s, Plan) for s in plan_settings]
        added += [_parameter(s, Preprocess) for s in preprocess_settings]
        added += [_parameter(s, HubPolicy) for s in hub_settings]
        head = [p for p in kept if p.name not in _TAIL]
        tail = [p for p in kept if p.name in _TAIL]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            plan = {s.name: _value(s, kwargs.pop(s.name)) for s in plan_settings}
            if preprocess_settings:
                pre = {s.name: _value(s, kwargs.pop(s.name)) for s in preprocess_settings}
                plan["preprocess"] = Preprocess(**pre)
            hub = HubPolicy(**{s.name: _value(s, kwargs.pop(s.name)) for s in hub_settings})
            return func(**kwargs, plan_settings=plan, hub=hub)

        parameters = head + added + tail
        del command.__wrapped__  # typer must see the new signature, not the function's own
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate


def _checked(option: str, parse: Callable[[str], Any], text: str) -> str:
    """``text`` when ``parse`` takes it (the plan keeps the text), else a usage error."""
    try:
        parse(text)
    except ValueError as exc:
        raise UsageError(
            f"{option} {text!r}: {exc}",
            code=Code.BAD_CONFIG,
            hint="see 'flsilo hub init --help' and docs/how-to/hub-administrator.md",
        ) from exc
    return text


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in name_list(text))
    except ValueError as exc:
        raise UsageError(
            f"--thresholds {text!r}: not a list of numbers",
            code=Code.BAD_CONFIG,
            hint="one threshold per finding, e.g. --thresholds 0.5,0.3,0.5",
        ) from exc


def _augment(text: str) -> Augment:
    _checked("--augment", parse_augment, text)
    return parse_augment(text)


def _choice(option: str, choices: tuple[str, ...], text: str) -> str:
    if text not in choices:
        raise UsageError(
            f"{option} {text!r} is not known",
            code=Code.BAD_CONFIG,
            hint=f"use one of {', '.join(choices)}",
        )
    return text


def _intensity(text: str) -> str:
    return _choice("--intensity", INTENSITIES, text)


def parse_merge(text: str) -> str:
    if text not in MERGES:
        raise UsageError(
            f"--merge {text!r} is not known",
            code=Code.BAD_MERGE,
            hint=f"use one of {', '.join(MERGES)}",
        )
    return text


def parse_server_optimizer(text: str) -> str:
    if text not in SERVER_OPTIMIZERS:
        raise UsageError(
            f"--server-optimizer {text!r} is not known",
            code=Code.BAD_SERVER_OPTIMIZER,
            hint=f"use one of {', '.join(SERVER_OPTIMIZERS)}",
        )
    return text


def parse_betas(text: str | None) -> tuple[float, ...] | None:
    """``"0.9,0.99"`` as two floats (None stays None: the optimizer's default)."""
    if text is None:
        return None
    try:
        b1, b2 = (float(p) for p in text.split(","))
    except ValueError as exc:
        raise UsageError(
            f"--server-betas {text!r} must be two numbers B1,B2",
            code=Code.BAD_SERVER_OPTIMIZER,
            hint="e.g. --server-betas 0.9,0.99",
        ) from exc
    return (b1, b2)


def int_list(text: str, what: str) -> tuple[int, ...]:
    """``"1,2,3"`` as whole numbers, or a usage error naming the option."""
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise UsageError(
            f"{what} {text!r} must be comma-separated whole numbers",
            hint=f"e.g. {what} 1,28,28",
        ) from exc


def name_list(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` as ``("a", "b", "c")``."""
    return tuple(p.strip() for p in text.split(",") if p.strip())
