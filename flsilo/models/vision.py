"""``torchvision:NAME[:k=v,...]`` and ``timm:NAME[:k=v,...]``: published architectures.

The architecture is built with **no weights** (``weights=None`` / ``pretrained=False``;
nothing ever downloads) and with a fresh classifier for the federation's classes, which is
named as the model's head (``model.flsilo_head``), so closed-form heads and ``--freeze``
work as for the built-ins. Pretrained weights come in through ``hub init --init-weights``.

A package pins such a model by its *identity*, ``LIBRARY==PUBLIC_VERSION:NAME`` (for example
``torchvision==0.29.1:resnet18``), recorded where built-in and plug-in models carry their
source file's digest: the library's own code defines the network, and a local build label
(``0.29.1+cpu``, ``0.29.1+cu130``) does not change it. A site with another public version
refuses to train.

flsilo's own arguments, taken out before the library sees the rest:

- ``norm=group`` replaces every BatchNorm layer by GroupNorm (``norm_groups=32`` groups, or
  the largest divisor of the channel count below it), for DP federations and non-IID sites;
  ``norm=batch`` (the default) keeps the library's BatchNorm.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from typing import TYPE_CHECKING, Any

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

LIBRARIES = ("torchvision", "timm")
HINT = "torchvision:NAME or timm:NAME with the 'vision' extra: pip install 'flsilo[vision]'"


def public_version(version: str) -> str:
    """``0.29.1+cpu`` -> ``0.29.1``: the local build label does not change the code."""
    return version.split("+", 1)[0]


def installed_version(library: str) -> str | None:
    """The installed library's public version, or None (read from metadata, no import)."""
    try:
        return public_version(importlib.metadata.version(library))
    except importlib.metadata.PackageNotFoundError:
        return None


def identity(library: str, name: str, version: str) -> str:
    return f"{library}=={version}:{name}"


def parse_identity(recorded: str) -> tuple[str, str, str] | None:
    """``torchvision==0.29.1:resnet18`` -> (library, version, name); None for a code digest."""
    lib, sep, rest = recorded.partition("==")
    version, sep2, name = rest.partition(":")
    if not sep or not sep2 or lib not in LIBRARIES:
        return None
    return lib, version, name


def bad(spec: str, why: str, hint: str = HINT) -> UsageError:
    return UsageError(f"model spec {spec!r}: {why}", code=Code.BAD_MODEL_SPEC, hint=hint)


def local_identity(spec_text: str, library: str, name: str) -> str:
    version = installed_version(library)
    if version is None:
        raise bad(spec_text, f"{library} is not installed here")
    return identity(library, name, version)


def identity_mismatch(library: str, name: str, recorded: str) -> tuple[str, str] | None:
    """Why this machine cannot build the recorded model, and the hint; None when it can."""
    parsed = parse_identity(recorded)
    want = parsed[1] if parsed else "?"
    here = installed_version(library)
    if parsed is not None and parsed[0] == library and parsed[2] == name and here == want:
        return None
    hint = f"install {library}=={want} (any local build of it, such as {want}+cpu), then rerun"
    if here is None:
        return f"{library} is not installed here (the package was built with {want})", hint
    return f"{library} {here} is installed here, the package was built with {want}", hint


def _unknown(spec: str, name: str, names: list[str], library: str) -> UsageError:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    near = f"close names: {', '.join(close)}" if close else f"{len(names)} names are known"
    return bad(
        spec,
        f"{library} has no classification model {name!r}",
        hint=f"{near}; the library's list_models() lists them all",
    )


def _torchvision(spec: str, name: str, input_shape: tuple[int, ...], n: int, kw: dict) -> Any:
    import torchvision

    names = list(torchvision.models.list_models(module=torchvision.models))
    if name in torchvision.models.list_models(module=torchvision.models.detection):
        from flsilo.models import tvdetect

        return tvdetect.build(spec, name, input_shape, n, kw)
    if name not in names:
        raise _unknown(spec, name, names, "torchvision")
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise bad(
            spec,
            f"torchvision's classification models take 3-channel images, not {input_shape}",
            hint="give --input-shape 3,H,W, or use timm:NAME (it adapts to any channel count)",
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=n, **kw)
    except (TypeError, ValueError) as exc:
        raise bad(spec, f"torchvision cannot build it ({exc})") from exc


def _timm(spec: str, name: str, input_shape: tuple[int, ...], n: int, kw: dict) -> Any:
    import timm

    if not timm.is_model(name):
        raise _unknown(spec, name, list(timm.list_models()), "timm")
    if len(input_shape) != 3:
        raise bad(spec, f"timm's image models take an input shape C,H,W, not {input_shape}")
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=n, in_chans=input_shape[0], **kw
        )
    except (TypeError, ValueError, AssertionError) as exc:
        raise bad(spec, f"timm cannot build it ({exc})") from exc


def _head_name(model: nn.Module, library: str, n: int) -> str:
    from torch import nn

    if library == "timm":
        named = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        if isinstance(named, str):
            try:
                if isinstance(model.get_submodule(named), nn.Linear):
                    return named
            except AttributeError:
                pass
    linear = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == n
    ]
    return linear[-1] if linear else ""


def build(
    spec: str, library: str, name: str, input_shape: tuple[int, ...], n: int, kwargs: dict
) -> nn.Module:
    """The library's architecture with no weights, a fresh classifier, and its head named."""
    kw = dict(kwargs)
    norm = kw.pop("norm", "batch")
    groups = kw.pop("norm_groups", 32)
    if norm not in ("batch", "group") or not isinstance(groups, int) or groups < 1:
        raise bad(spec, "norm must be 'batch' or 'group' and norm_groups a positive integer")
    if installed_version(library) is None:
        raise bad(spec, f"{library} is not installed here")
    make = _torchvision if library == "torchvision" else _timm
    model = make(spec, name, tuple(input_shape), n, kw)
    if norm == "group":
        replace_batchnorm(model, groups)
    head = _head_name(model, library, n)
    if head:
        model.flsilo_head = head
    return model


def _groups(channels: int, groups: int) -> int:
    """The largest group count at most ``groups`` that divides ``channels``."""
    return next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)


def _group_norm_for(module: nn.Module, groups: int) -> nn.Module:
    from torch import nn

    channels = int(module.num_features)  # type: ignore[arg-type]
    g = _groups(channels, groups)
    act, drop = getattr(module, "act", None), getattr(module, "drop", None)
    if act is None and drop is None:
        return nn.GroupNorm(g, channels, eps=float(module.eps))  # type: ignore[arg-type]
    from timm.layers import GroupNormAct  # timm's BatchNormAct2d: norm, drop, act in one

    replacement = GroupNormAct(channels, num_groups=g, eps=float(module.eps))  # type: ignore[arg-type]
    for part, kept in (("act", act), ("drop", drop)):
        if kept is not None:
            setattr(replacement, part, kept)
    return replacement


def replace_batchnorm(model: nn.Module, groups: int) -> None:
    """Put a GroupNorm (at most ``groups`` groups) wherever ``model`` has a BatchNorm layer."""
    from torch.nn.modules.batchnorm import _BatchNorm

    targets = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and n]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _group_norm_for(model.get_submodule(name), groups))
