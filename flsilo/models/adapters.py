"""Low-rank adapters that average exactly (FFA-LoRA: Sun et al., ICLR 2024).

``--adapters lora:r=R[,alpha=A,targets=GLOBS]`` puts, beside each targeted layer ``NAME``
(an ``nn.Linear``, or an ``nn.Conv2d`` without groups), two small layers:
``NAME.lora_A`` (rank ``r``; for a k x k convolution a k x k convolution to ``r`` channels
with the layer's stride, padding and dilation) and ``NAME.lora_B`` (a linear map, or a 1x1
convolution, from ``r`` to the layer's outputs). The layer then computes
``W x + (alpha / r) B A x``. A is drawn once, at ``hub init``, and travels in the package:
no site draws it, so no random-number contract is needed. B starts at zero (the adapted
model starts as the base) and is, with the head, the only thing that trains.

Because A is fixed and shared, every site's update is ``(alpha / r) dB A``, linear in its B:
the weighted mean of the sites' B matrices gives exactly the weighted mean of their updates
(linear rules: fedavg, mean, the server optimizers). Robust rules (median, trimmed mean,
Krum, ...) combine the B matrices as any tensor; that is robust in B, which is what the
sites send. ``merge`` folds the adapters into the base weights (``W + (alpha / r) B A``)
for ``export`` and ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flsilo.format.tensorsets import LORA_A, AdapterSpec, parse_adapters
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError

if TYPE_CHECKING:
    import torch
    from torch import nn

HANDLE = "_flsilo_lora_hook"


def eligible(module: Any) -> bool:
    """Layers an adapter can sit on: linear layers and convolutions without groups."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1


def default_target(module: Any) -> bool:
    """Targets when no globs are given: every linear layer and 1x1 convolution."""
    from torch import nn

    if isinstance(module, nn.Conv2d):
        return eligible(module) and tuple(module.kernel_size) == (1, 1)
    return isinstance(module, nn.Linear)


def resolve_targets(model: nn.Module, spec: AdapterSpec, head: str) -> list[str]:
    """The layers the spec's globs (or the default) pick, the head never among them.

    Raises ValueError naming a glob that matches no linear or convolution layer.
    """
    from torch import nn

    inside = {  # nn.MultiheadAttention reads its out_proj's weight without calling it
        f"{n}.{c}" for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)
        for c, _ in m.named_children()
    }  # fmt: skip
    modules = [(n, m) for n, m in model.named_modules() if n and n != head and n not in inside]
    if not spec.targets:
        return [n for n, m in modules if default_target(m)]
    picked: list[str] = []
    for glob in spec.targets:
        hits = [n for n, m in modules if fnmatchcase(n, glob) and eligible(m)]
        if not hits:
            raise ValueError(
                f"adapter target {glob!r} matches no linear or convolution layer but the head"
            )
        picked += [n for n in hits if n not in picked]
    return sorted(picked, key=[n for n, _ in modules].index)


def _lora_forward(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
    """The adapted layer's output: the base layer's plus (alpha / r) B A x."""
    lora_a: Any = module.lora_A
    lora_b: Any = module.lora_B
    return out + lora_b(lora_a(args[0])) * float(module.lora_scale)  # type: ignore[arg-type]


def _pair(layer: nn.Module, r: int) -> tuple[Any, Any]:
    from torch import nn

    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, r, bias=False), nn.Linear(r, layer.out_features, False)
    assert isinstance(layer, nn.Conv2d)
    a = nn.Conv2d(
        layer.in_channels,
        r,
        layer.kernel_size,  # type: ignore[arg-type]
        stride=layer.stride,  # type: ignore[arg-type]
        padding=layer.padding,  # type: ignore[arg-type]
        dilation=layer.dilation,  # type: ignore[arg-type]
        bias=False,
        padding_mode=layer.padding_mode,
    )
    return a, nn.Conv2d(r, layer.out_channels, 1, bias=False)


def attach(model: nn.Module, spec: AdapterSpec, targets: Iterable[str]) -> None:
    """Put an adapter on each target layer: A drawn from torch's generator, B zero.

    The model's head keeps its name (``model.flsilo_head``) whatever layers are added.
    """
    import torch

    from flsilo.models.registry import HEAD_ATTRIBUTE, head_module_name

    if not isinstance(getattr(model, HEAD_ATTRIBUTE, None), str):
        setattr(model, HEAD_ATTRIBUTE, head_module_name(model))
    for name in targets:
        layer = model.get_submodule(name)
        weight: Any = layer.weight
        a, b = _pair(layer, spec.r)
        with torch.no_grad():
            b.weight.zero_()
        a.weight.requires_grad_(False)
        a.to(weight.device, weight.dtype)
        b.to(weight.device, weight.dtype)
        layer.add_module("lora_A", a)
        layer.add_module("lora_B", b)
        setattr(layer, "lora_scale", spec.scale)  # noqa: B010 (a plain float on a Module)
        setattr(layer, HANDLE, layer.register_forward_hook(_lora_forward))


def add_adapters(model: nn.Module, text: str) -> list[str]:
    """``hub init``: resolve the spec's targets on ``model`` and attach fresh adapters.

    Raises ValueError (a bad spec, a glob that matches nothing).
    """
    from flsilo.models.registry import head_module_name

    spec = parse_adapters(text)
    targets = resolve_targets(model, spec, head_module_name(model))
    if not targets:
        raise ValueError("the model has no linear or 1x1 convolution layer besides the head")
    attach(model, spec, targets)
    return targets


def package_targets(names: Iterable[str]) -> list[str]:
    """The adapted layers a package names: every ``NAME`` with a ``NAME.lora_A.weight``."""
    return [n[: -len(LORA_A)] for n in names if n.endswith(LORA_A)]


def apply_package_adapters(
    model: nn.Module, text: str, names: Iterable[str], path: Path | None = None
) -> None:
    """A site: attach the package's adapters, if it has any (A and B are loaded next).

    Refuses (``adapters-unsupported``) what this flsilo cannot apply: an unknown kind, a
    target the local model lacks or cannot adapt.
    """
    if not text:
        return
    try:
        spec = parse_adapters(text)
        targets = package_targets(names)
        for name in targets:
            try:
                layer = model.get_submodule(name)
            except AttributeError as exc:
                raise ValueError(f"the model has no layer {name!r} to adapt") from exc
            if not eligible(layer):
                raise ValueError(f"layer {name!r} is a {type(layer).__name__}, not adaptable")
    except ValueError as exc:
        raise PolicyError(
            f"cannot apply the package's adapters {text!r}: {exc}",
            path=path,
            code=Code.ADAPTERS_UNSUPPORTED,
            hint="install the flsilo version the hub uses, then rerun",
        ) from exc
    attach(model, spec, targets)


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer (``W + (alpha / r) B A``) and take it off."""
    import torch

    for _name, layer in list(model.named_modules()):
        if not hasattr(layer, "lora_A"):
            continue
        a: Any = layer.lora_A
        b: Any = layer.lora_B
        weight: Any = layer.weight
        with torch.no_grad():
            delta = b.weight.flatten(1).double() @ a.weight.flatten(1).double()
            weight += (delta * float(layer.lora_scale)).reshape(weight.shape).to(weight.dtype)
        getattr(layer, HANDLE).remove()
        for attr in ("lora_A", "lora_B"):
            delattr(layer, attr)
        for attr in ("lora_scale", HANDLE):
            layer.__dict__.pop(attr, None)
    return model
