"""torchvision's detection models (``torchvision:ssdlite320_mobilenet_v3_large`` ...) for ``detect``.

Built with no weights and no backbone weights (nothing downloads; a start comes in through
``hub init --init-weights``), for the federation's classes plus torchvision's background
class 0. The model resizes and normalises its input itself (its own ``min_size`` /
``size`` and ImageNet statistics, as torchvision documents each one), so a plan for one
usually keeps ``--normalize none``; the input shape is the size the sites' preprocessing
produces before that. Keypoint and mask models need targets flsilo does not carry and are
refused.

``loss`` and ``detect`` are what the ``detect`` task calls: torchvision's own training
losses (their sum, a batch mean) and its post-processed detections, with boxes as corners
normalised to the input and flsilo's class indices (torchvision's label minus one).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError

MARK = "flsilo_detection"
"""Attribute set on the model: which library's detection calling convention it follows."""
REFUSED = ("keypointrcnn", "maskrcnn")


def build(spec: str, name: str, input_shape: tuple[int, ...], n: int, kw: dict) -> nn.Module:
    import torchvision

    if name.startswith(REFUSED):
        raise UsageError(
            f"model spec {spec!r}: {name} needs mask or keypoint targets",
            code=Code.BAD_MODEL_SPEC,
            hint="use a box detector: ssdlite320_mobilenet_v3_large, "
            "fasterrcnn_mobilenet_v3_large_320_fpn, retinanet_resnet50_fpn, fcos_resnet50_fpn",
        )
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise UsageError(
            f"model spec {spec!r}: torchvision's detection models take 3-channel images, "
            f"not {input_shape}",
            code=Code.BAD_MODEL_SPEC,
            hint="give --input-shape 3,H,W",
        )
    try:
        model: nn.Module = torchvision.models.get_model(
            name, weights=None, weights_backbone=None, num_classes=n + 1, **kw
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"model spec {spec!r}: torchvision cannot build it ({exc})",
            code=Code.BAD_MODEL_SPEC,
            hint="check the arguments against torchvision's documentation of the model",
        ) from exc
    setattr(model, MARK, "torchvision")
    return model


def is_torchvision_detector(model: nn.Module) -> bool:
    return getattr(model, MARK, "") == "torchvision"


def _scale(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    return x.new_tensor([w, h, w, h])


def loss(model: nn.Module, x: Tensor, targets: list[Tensor]) -> Tensor:
    """The batch's mean loss: the sum of torchvision's losses for ``targets`` (n, 5) each."""
    scale = _scale(x)
    wanted = [
        {"boxes": t[:, 1:].to(x.dtype) * scale, "labels": t[:, 0].long() + 1} for t in targets
    ]
    losses: dict[str, Tensor] = model(list(x), wanted)
    return torch.stack(list(losses.values())).sum()


def detect(model: nn.Module, x: Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    scale = _scale(x)
    found: list[dict[str, Any]] = model(list(x))
    return [
        (
            (d["boxes"] / scale).clamp(0, 1).cpu().numpy().astype(np.float32),
            d["scores"].cpu().numpy().astype(np.float32),
            (d["labels"] - 1).cpu().numpy().astype(np.int64),
        )
        for d in found
    ]
