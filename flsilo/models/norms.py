"""BatchNorm under a frozen backbone: its running statistics stay as the package has them.

A BatchNorm layer whose tensors (weight, bias and running statistics) are all frozen by the
plan's ``--freeze`` globs runs in eval mode while the site trains: it normalises with the
package's running statistics, never with the batch's, and never updates them. So the frozen
backbone computes the same function at every site and in every round (what a closed-form
head or a trainable head on top needs), and no sample mixes with others through it, which is
why a DP federation accepts such a model. BatchNorm layers that train are averaged as any
tensor (docs/reference/models.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MethodType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def _frozen_whole(prefix: str, module: nn.Module, frozen: set[str]) -> bool:
    names = [f"{prefix}.{n}" if prefix else n for n in module.state_dict()]
    return bool(names) and all(n in frozen for n in names)


def frozen_batchnorms(model: nn.Module, frozen: Iterable[str]) -> list[str]:
    """Names of the BatchNorm layers whose state-dict tensors are all in ``frozen``."""
    from torch.nn.modules.batchnorm import _BatchNorm

    held = set(frozen)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm) and _frozen_whole(name, module, held)
    ]


def live_modules(model: nn.Module, frozen: Iterable[str]) -> list[Any]:
    """Every module of ``model`` but the frozen BatchNorm layers (what DP must privatise)."""
    still = set(frozen_batchnorms(model, frozen))
    return [m for n, m in model.named_modules() if n not in still]


def _eval_only(self: nn.Module, mode: bool = True) -> nn.Module:  # noqa: ARG001
    from torch import nn

    return nn.Module.train(self, False)


def hold_frozen_batchnorms(model: nn.Module, frozen: Iterable[str]) -> list[str]:
    """Keep the frozen BatchNorm layers in eval mode, even under ``model.train()``."""
    names = frozen_batchnorms(model, frozen)
    for name in names:
        module = model.get_submodule(name)
        setattr(module, "train", MethodType(_eval_only, module))  # noqa: B010
        module.eval()
    return names
