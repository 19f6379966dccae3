"""The preprocessing contract of a plan: ``[plan.preprocess]`` and ``[plan.augment]``.

How a file becomes the model's input is part of the signed plan, so every site turns its
data into tensors the same way and no site can override it. This module holds the two
tables' types, the parsing of their texts and the rules they obey; ``site_kit.preprocess``
applies them to pixels and rows (numpy and Pillow, never here: the trust core reads plans
without numpy).

Images: ``resize`` (``stretch``, ``letterbox``, ``shorter-side[:CROP_RATIO]``), the
channels from the input shape, ``intensity`` (``8bit``, ``16bit``, ``dicom`` with its
``window``), ``normalize`` (``none``, ``imagenet``, ``federation``, ``M1,M2,M3/S1,S2,S3``).
Tables: ``standardize`` (``none``, ``federation``) and ``impute`` (``none``, ``mean``,
``constant:V``, either with ``,indicator``). Video: ``frame_rate`` or
``frames_per_clip``. ``federation_mean`` and ``federation_std`` are written by the hub
after a ``stats`` round (per channel or per feature); empty before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the manifest's types name Preprocess: no import at run time
    from flsilo.format.manifest import Manifest

RESIZES = ("stretch", "letterbox", "shorter-side")
INTENSITIES = ("8bit", "16bit", "dicom")
NORMALIZES = ("none", "imagenet", "federation")
STANDARDIZES = ("none", "federation")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_RATIO = 0.875
"""``shorter-side`` without a ratio: resize the shorter side to 1/0.875 of the target, crop."""


@dataclass(frozen=True)
class Preprocess:
    """``[plan.preprocess]``: how every site turns a file (or a row) into the model's input."""

    resize: str = "stretch"
    intensity: str = "8bit"
    window: str = "file"
    """``dicom`` intensity: ``CENTER,WIDTH``, or ``file`` (each file's own VOI window)."""
    normalize: str = "none"
    standardize: str = "none"
    impute: str = "none"
    frame_rate: float = 0.0
    """Video: frames sampled per second of each clip (0: not set)."""
    frames_per_clip: int = 0
    """Video: frames sampled evenly from each clip (0: not set)."""
    federation_mean: tuple[float, ...] = ()
    federation_std: tuple[float, ...] = ()


@dataclass(frozen=True)
class Augment:
    """``[plan.augment]``: random changes applied to training samples only.

    ``hflip``: flip left-right with probability 1/2; ``crop``: random resized crop keeping
    at least this share of the area (0: off); ``rotate``: rotate by up to this many degrees
    either way; ``jitter``: brightness and contrast factors in [1 - X, 1 + X]; ``noise``:
    add Gaussian noise of this standard deviation (on the 0-1 intensity scale).
    """

    hflip: bool = False
    crop: float = 0.0
    rotate: float = 0.0
    jitter: float = 0.0
    noise: float = 0.0

    @property
    def active(self) -> bool:
        return self.hflip or any(v > 0 for v in (self.crop, self.rotate, self.jitter, self.noise))


@dataclass(frozen=True)
class Impute:
    mode: str  # "none", "mean" or "constant"
    value: float = 0.0
    indicator: bool = False


def parse_resize(text: str) -> tuple[str, float]:
    """``stretch`` / ``letterbox`` / ``shorter-side[:R]`` as (policy, crop ratio)."""
    policy, sep, ratio = text.partition(":")
    if policy not in RESIZES or (sep and policy != "shorter-side"):
        raise ValueError(f"resize {text!r} is not stretch, letterbox or shorter-side[:CROP_RATIO]")
    if not sep:
        return policy, DEFAULT_CROP_RATIO if policy == "shorter-side" else 1.0
    value = _number(ratio, f"resize {text!r}: the crop ratio")
    if not 0 < value <= 1:
        raise ValueError(f"resize {text!r}: the crop ratio must be in (0, 1]")
    return policy, value


def parse_window(text: str) -> tuple[float, float] | None:
    """``CENTER,WIDTH`` as two numbers; ``file`` as None (each file's own window)."""
    if text == "file":
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"window {text!r} is not CENTER,WIDTH or file")
    center, width = (_number(p, f"window {text!r}") for p in parts)
    if width <= 0:
        raise ValueError(f"window {text!r}: the width must be positive")
    return center, width


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | str:
    """``none``, ``imagenet``, ``federation`` as themselves; ``M1,M2,M3/S1,S2,S3`` as numbers."""
    if text in NORMALIZES:
        return text
    mean_text, sep, std_text = text.partition("/")
    if not sep:
        raise ValueError(
            f"normalize {text!r} is not none, imagenet, federation or M1,M2,M3/S1,S2,S3"
        )
    mean = tuple(_number(p, f"normalize {text!r}") for p in mean_text.split(","))
    std = tuple(_number(p, f"normalize {text!r}") for p in std_text.split(","))
    if len(mean) != len(std):
        raise ValueError(f"normalize {text!r}: as many means as standard deviations")
    if any(s <= 0 for s in std):
        raise ValueError(f"normalize {text!r}: standard deviations must be positive")
    return mean, std


def parse_impute(text: str) -> Impute:
    """``none``, ``mean[,indicator]`` or ``constant:V[,indicator]``."""
    head, sep, tail = text.partition(",")
    if sep and tail != "indicator":
        raise ValueError(f"impute {text!r}: only ',indicator' may follow")
    indicator = bool(sep)
    if head == "none" and not indicator:
        return Impute("none")
    if head == "mean":
        return Impute("mean", indicator=indicator)
    kind, colon, value = head.partition(":")
    if kind == "constant" and colon:
        return Impute("constant", _number(value, f"impute {text!r}"), indicator)
    raise ValueError(f"impute {text!r} is not none, mean[,indicator] or constant:V[,indicator]")


def parse_augment(text: str) -> Augment:
    """``hflip,crop:SCALE,rotate:DEG,jitter:X,noise:SIGMA`` (any subset; ``none`` or empty: off)."""
    values: dict[str, float | bool] = {}
    for item in (p.strip() for p in text.split(",")):
        if item in ("", "none"):
            continue
        name, sep, number = item.partition(":")
        if name == "hflip" and not sep:
            values["hflip"] = True
            continue
        if name not in ("crop", "rotate", "jitter", "noise") or not sep:
            raise ValueError(
                f"augment {item!r} is not hflip, crop:SCALE, rotate:DEG, jitter:X or noise:SIGMA"
            )
        values[name] = _number(number, f"augment {item!r}")
    augment = Augment(**values)  # type: ignore[arg-type]
    problem = augment_problem(augment)
    if problem:
        raise ValueError(problem)
    return augment


def augment_text(augment: Augment) -> str:
    """The ``--augment`` text of ``augment`` (``none`` when off)."""
    parts = ["hflip"] if augment.hflip else []
    for name in ("crop", "rotate", "jitter", "noise"):
        value = getattr(augment, name)
        if value > 0:
            parts.append(f"{name}:{value:g}")
    return ",".join(parts) or "none"


def augment_problem(a: Augment) -> str | None:
    if not 0 <= a.crop <= 1:
        return "augment crop:SCALE needs 0 < SCALE <= 1 (the smallest share of the area kept)"
    if not 0 <= a.rotate <= 180:
        return "augment rotate:DEG needs 0 <= DEG <= 180"
    if not 0 <= a.jitter < 1:
        return "augment jitter:X needs 0 <= X < 1"
    if not 0 <= a.noise <= 1:
        return "augment noise:SIGMA needs 0 <= SIGMA <= 1"
    return None


def preprocess_problem(p: Preprocess) -> str | None:
    """The first rule the ``[plan.preprocess]`` table breaks, in words, or None."""
    try:
        parse_resize(p.resize)
        parse_window(p.window)
        parse_normalize(p.normalize)
        parse_impute(p.impute)
    except ValueError as exc:
        return str(exc)
    if p.intensity not in INTENSITIES:
        return f"intensity {p.intensity!r} is not one of {', '.join(INTENSITIES)}"
    if p.standardize not in STANDARDIZES:
        return f"standardize {p.standardize!r} is not one of {', '.join(STANDARDIZES)}"
    if p.frame_rate < 0 or p.frames_per_clip < 0:
        return "frame rate and frames per clip cannot be negative"
    if p.frame_rate > 0 and p.frames_per_clip > 0:
        return "give one of --frame-rate and --frames-per-clip, not both"
    if len(p.federation_mean) != len(p.federation_std):
        return "federation_mean and federation_std need one value each per channel or feature"
    if not all(math.isfinite(v) for v in p.federation_mean + p.federation_std):
        return "federation statistics must be finite"
    if any(s <= 0 for s in p.federation_std):
        return "federation_std values must be positive"
    return None


def stats_width(p: Preprocess, input_shape: tuple[int, ...]) -> int:
    """Values a federation-statistics round measures: channels of an image, columns of a table.

    ``--impute ...,indicator`` appends one 0/1 feature per feature, so a model input of
    width 2F reads (and measures) F columns.
    """
    if len(input_shape) == 3:
        return input_shape[0]
    width = math.prod(input_shape)
    return width // 2 if parse_impute(p.impute).indicator else width


def needs_statistics(p: Preprocess) -> bool:
    """Whether the plan uses the federation's statistics (a ``stats`` round must come first)."""
    return (
        p.normalize == "federation"
        or p.standardize == "federation"
        or parse_impute(p.impute).mode == "mean"
    )


def shape_problem(
    p: Preprocess, input_shape: tuple[int, ...], feature_columns: tuple[str, ...]
) -> str | None:
    """Rules between the preprocessing and the federation's input shape (``hub init``)."""
    image = len(input_shape) == 3
    normalize = parse_normalize(p.normalize)
    if isinstance(normalize, tuple) and image and len(normalize[0]) != input_shape[0]:
        return (
            f"--normalize gives {len(normalize[0])} means for an input of "
            f"{input_shape[0]} channel(s)"
        )
    impute = parse_impute(p.impute)
    if impute.indicator:
        width = math.prod(input_shape)
        if width % 2:
            return (
                "--impute ...,indicator appends one 0/1 feature per feature: the input "
                f"width must be twice the feature count, {width} is odd"
            )
        if feature_columns and 2 * len(feature_columns) != width:
            return (
                f"--impute ...,indicator: {len(feature_columns)} feature columns make an "
                f"input width of {2 * len(feature_columns)}, the input shape says {width}"
            )
    return None


def preprocess_lines(p: Preprocess, a: Augment) -> list[str]:
    """The contract in words, one setting a line (``inspect``, ``check-data``)."""
    lines = [
        f"resize {p.resize}, intensity {p.intensity}"
        + (f" (window {p.window})" if p.intensity == "dicom" else ""),
        f"normalize {p.normalize}, standardize {p.standardize}, impute {p.impute}",
    ]
    if p.frame_rate > 0:
        lines.append(f"video: {p.frame_rate:g} frames per second")
    if p.frames_per_clip > 0:
        lines.append(f"video: {p.frames_per_clip} frames per clip")
    if p.federation_mean:
        mean = ",".join(f"{v:.4g}" for v in p.federation_mean)
        std = ",".join(f"{v:.4g}" for v in p.federation_std)
        lines.append(f"federation statistics: mean {mean} / std {std}")
    lines.append(f"augment (training only): {augment_text(a)}")
    return lines


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite")
    return value


def model_preprocess(m: Manifest) -> Preprocess | None:
    """The preprocessing an artifact's model expects (None: a version-2 final package)."""
    if m.bundle is not None:
        return m.bundle.plan.preprocess
    assert m.package is not None
    if m.package.preprocess is not None:
        return m.package.preprocess
    return m.package.plan.preprocess if m.package.plan is not None else None
