"""Model specs: parse ``name[:k=v,...]``, ``module:factory[:k=v,...]``, ``torchvision:NAME``
or ``timm:NAME`` (flsilo.models.vision), build, and digest code.

A spec names the code that defines a model. Its *code digest* is the SHA-256 of that
module's source file; the hub pins it in every package and a site refuses to train when its
local code differs, so every site trains the same network. Factories are called as
``factory(input_shape, num_classes, **kwargs)`` and return a ``torch.nn.Module``. A
torchvision or timm model is pinned by its library, public version and name instead
(``torchvision==0.29.1:resnet18``), recorded in the same place.

Argument values are integers, floats, or integer lists written with ``x`` (``hidden=256x128``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flsilo.models import vision
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

BUILTINS = {
    "logreg": "flsilo.models.logreg",
    "mlp": "flsilo.models.mlp",
    "cnn": "flsilo.models.cnn",
    "resnet": "flsilo.models.resnet",
    "detector": "flsilo.models.detector",
    "crnn": "flsilo.models.crnn",
}


@dataclass(frozen=True)
class ModelSpec:
    text: str
    module: str
    factory: str
    kwargs: dict[str, Any]
    library: str = ""
    """``torchvision`` or ``timm`` for a published architecture (``factory`` is its name)."""


def _value(text: str) -> Any:
    if "x" in text and all(p.isdigit() for p in text.split("x")):
        return tuple(int(p) for p in text.split("x"))
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    return text


def _bad(spec: str, why: str) -> UsageError:
    return UsageError(
        f"model spec {spec!r}: {why}",
        code=Code.BAD_MODEL_SPEC,
        hint="use logreg, mlp[:hidden=200x200], cnn[:channels=32x64,hidden=512], "
        "resnet[:width=16,blocks=1], crnn[:channels=16x32x48,hidden=64] (sequence), "
        "torchvision:NAME, timm:NAME, or package.module:factory",
    )


def parse_spec(spec: str) -> ModelSpec:
    parts = spec.split(":")
    library = ""
    if parts[0] in vision.LIBRARIES:
        if len(parts) < 2 or not parts[1]:
            raise _bad(spec, f"name the {parts[0]} model, e.g. {parts[0]}:resnet18")
        library = module = parts[0]
        factory, args = parts[1], parts[2:]
    elif parts[0] in BUILTINS:
        module, factory, args = BUILTINS[parts[0]], "build", parts[1:]
    elif len(parts) >= 2 and parts[0] and parts[1].isidentifier():
        module, factory, args = parts[0], parts[1], parts[2:]
    else:
        raise _bad(spec, "not a built-in model nor module:factory")
    if len(args) > 1:
        raise _bad(spec, "too many ':'")
    kwargs: dict[str, Any] = {}
    for item in args[0].split(",") if args and args[0] else []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise _bad(spec, f"argument {item!r} is not key=value")
        kwargs[key] = _value(value)
    return ModelSpec(text=spec, module=module, factory=factory, kwargs=kwargs, library=library)


def module_source_file(spec: ModelSpec) -> Path:
    found = importlib.util.find_spec(spec.module)
    if found is None or found.origin is None or not found.origin.endswith(".py"):
        raise _bad(spec.text, f"module {spec.module!r} is not installed here as Python source")
    return Path(found.origin)


def code_digest(spec_text: str) -> str:
    """SHA-256 of the source file that defines the model (no import needed); for a
    torchvision or timm model its identity ``LIBRARY==VERSION:NAME`` instead."""
    spec = parse_spec(spec_text)
    if spec.library:
        return vision.local_identity(spec_text, spec.library, spec.factory)
    return hashlib.sha256(module_source_file(spec).read_bytes()).hexdigest()


def code_mismatch(spec_text: str, recorded: str) -> tuple[str, str] | None:
    """Why this machine's model code differs from the package's ``recorded`` digest or
    identity, and the hint; None when they match."""
    spec = parse_spec(spec_text)
    if spec.library:
        return vision.identity_mismatch(spec.library, spec.factory, recorded)
    local = code_digest(spec_text)
    if local == recorded:
        return None
    return (
        f"the local code of model {spec_text!r} differs from the hub's "
        f"(digest {local[:12]}… here, {recorded[:12]}… in the package)",
        "install the flsilo (or plug-in) version the hub uses, then rerun",
    )


def build_model(spec_text: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    spec = parse_spec(spec_text)
    if spec.library:
        return vision.build(
            spec_text, spec.library, spec.factory, tuple(input_shape), num_classes, spec.kwargs
        )
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise _bad(spec_text, f"module {spec.module!r} cannot be imported ({exc})") from exc
    factory = getattr(module, spec.factory, None)
    if not callable(factory):
        raise _bad(spec_text, f"{spec.module} has no callable {spec.factory!r}")
    accepted = inspect.signature(factory).parameters
    unknown = [k for k in spec.kwargs if k not in accepted]
    if unknown:
        raise _bad(spec_text, f"unknown argument {unknown[0]!r}")
    try:
        model = factory(tuple(input_shape), num_classes, **spec.kwargs)
    except (TypeError, ValueError) as exc:
        raise _bad(spec_text, str(exc)) from exc
    return model


HEAD_ATTRIBUTE = "flsilo_head"
"""A factory may name its head module on the model it returns: ``model.flsilo_head = "fc"``."""


def head_module_name(model: nn.Module) -> str:
    """The model's head: the module named by ``model.flsilo_head``, else its last nn.Linear.

    The head is the layer a closed-form solver replaces and a frozen backbone feeds; its
    *features* are whatever the model passes into it.
    """
    from torch import nn

    named = getattr(model, HEAD_ATTRIBUTE, None)
    if isinstance(named, str):
        return named
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ValueError("the model has no nn.Linear layer and names no flsilo_head")
    return linear[-1]


def head_tensor_names(model: nn.Module) -> tuple[str, ...]:
    """State-dict names of the head's tensors, weight first (e.g. ``fc.weight``, ``fc.bias``)."""
    name = head_module_name(model)
    module = model.get_submodule(name)
    prefix = f"{name}." if name else ""
    own = [n for n, _ in module.state_dict().items()]
    return tuple(prefix + n for n in sorted(own, key=lambda n: (n != "weight", n)))


def head_features(model: nn.Module, x: Any) -> Any:
    """The features ``model`` feeds its head for input batch ``x``, flattened to (N, d).

    Captured with a forward pre-hook on the head, so any architecture works unchanged.
    """
    import torch

    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0])

    head = model.get_submodule(head_module_name(model))
    handle = head.register_forward_pre_hook(grab)
    try:
        model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"the head ran {len(captured)} times in one forward pass, not once")
    return captured[0].flatten(1)
