"""``detector``: a small single-scale, anchor-free object detector (CenterNet-style) for CPUs.

Zhou et al., "Objects as Points" (2019): the network predicts, on a grid at 1/4 of the input
size, a heat map per class whose peaks are object centres, and at each cell the centre's
sub-cell offset and the box's size. This one is small enough to train on two CPU cores at
about 128 x 128 pixels: a GroupNorm conv backbone down to 1/16 with a top-down path back to
1/4 (no BatchNorm: nothing site-specific hides in running statistics), and a 3x3 + 1x1 head.

Training targets (``detection_loss``): per class an elliptical Gaussian at each object's
centre cell, sigma = ``GAUSS_ALPHA`` x the box's width or height / 6 (TTFNet, Liu et al.
2020); the loss is the penalty-reduced focal loss of the heat map, plus L1 of the
offset and of the log box size at the centre cells, each averaged over the image's objects.
The loss is a sum of per-image losses, so a batch's ``mean`` and ``sum`` are plain.

Decoding (``detect``): 3x3 max-pool peaks of the sigmoid heat maps, the ``TOP_K`` best,
boxes from offset and size, class-wise NMS at IoU ``NMS_IOU`` (``flsilo.scoring.boxes``: no
torchvision needed). Boxes are corners normalised to the input (0..1).

Arguments: ``width`` (channels at 1/4; 1/8 and 1/16 have twice as many), ``groups``
(GroupNorm groups).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flsilo.scoring.boxes import batched_nms

STRIDE = 4
GAUSS_ALPHA = 0.54
TOP_K = 100
NMS_IOU = 0.6
MIN_SCORE = 0.01
HEAT_PRIOR = 0.1
SIZE_WEIGHT = 1.0
OFFSET_WEIGHT = 1.0

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One image's detections: boxes (n, 4) normalised corners, scores (n,), class indices (n,)."""


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


def _conv(cin: int, cout: int, groups: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        _norm(cout, groups),
        nn.ReLU(),
    )


class Detector(nn.Module):
    """Backbone to 1/16, top-down to 1/4, one head: K heat maps, 2 offsets, 2 log sizes."""

    def __init__(self, in_channels: int, num_classes: int, width: int, groups: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        w = width
        self.stem = nn.Sequential(
            _conv(in_channels, w // 2, groups, 2), _conv(w // 2, w, groups, 2), _conv(w, w, groups)
        )
        self.down8 = nn.Sequential(_conv(w, 2 * w, groups, 2), _conv(2 * w, 2 * w, groups))
        self.down16 = nn.Sequential(_conv(2 * w, 2 * w, groups, 2), _conv(2 * w, 2 * w, groups))
        self.lateral8 = nn.Conv2d(2 * w, 2 * w, 1)
        self.lateral4 = nn.Conv2d(w, 2 * w, 1)
        self.neck = _conv(2 * w, w, groups)
        self.head = nn.Sequential(
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, num_classes + 4, 1)
        )
        last = self.head[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        with torch.no_grad():
            last.bias.zero_()
            last.bias[:num_classes].fill_(-math.log((1 - HEAT_PRIOR) / HEAT_PRIOR))

    def forward(self, x: Tensor) -> Tensor:
        c4 = self.stem(x)
        c8 = self.down8(c4)
        c16 = self.down16(c8)
        p8 = self.lateral8(c8) + F.interpolate(c16, size=c8.shape[-2:], mode="nearest")
        p4 = self.lateral4(c4) + F.interpolate(p8, size=c4.shape[-2:], mode="nearest")
        out: Tensor = self.head(self.neck(p4))
        return out

    def detection_loss(self, x: Tensor, targets: list[Tensor]) -> Tensor:
        """Per-image losses (N,) for input ``x`` and each image's (n, 5) targets
        (class, x1, y1, x2, y2 normalised to the input)."""
        return centernet_loss(self(x), targets, self.num_classes)

    @torch.no_grad()
    def detect(self, x: Tensor) -> list[Detections]:
        return decode(self(x), self.num_classes)


def _gaussians(target: Tensor, k: int, h: int, w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image's heat map (k, h, w), and its objects' centre cells, offsets and log sizes."""
    heat = target.new_zeros((k, h, w))
    if target.numel() == 0:
        empty = target.new_zeros((0, 2))
        return heat, empty.long(), empty, empty
    cls = target[:, 0].long()
    box = target[:, 1:] * target.new_tensor([w, h, w, h])
    centre = (box[:, :2] + box[:, 2:]) / 2
    size = (box[:, 2:] - box[:, :2]).clamp(min=1e-3)
    cell = centre.floor().clamp(min=0).minimum(target.new_tensor([w - 1, h - 1])).long()
    sigma = (GAUSS_ALPHA * size / 6).clamp(min=0.3)
    ys = torch.arange(h, dtype=target.dtype).view(1, h, 1)
    xs = torch.arange(w, dtype=target.dtype).view(1, 1, w)
    cx, cy = cell[:, 0].to(target.dtype).view(-1, 1, 1), cell[:, 1].to(target.dtype).view(-1, 1, 1)
    g = torch.exp(
        -((xs - cx) ** 2) / (2 * sigma[:, 0].view(-1, 1, 1) ** 2)
        - ((ys - cy) ** 2) / (2 * sigma[:, 1].view(-1, 1, 1) ** 2)
    )
    for c in cls.unique().tolist():
        heat[c] = g[cls == c].amax(dim=0)
    return heat, cell, centre - cell.to(target.dtype), size.log()


def centernet_loss(out: Tensor, targets: list[Tensor], k: int) -> Tensor:
    """Per-image losses of raw outputs ``out`` (N, k + 4, h, w); see the module docstring."""
    n, _, h, w = out.shape
    losses = []
    for i in range(n):
        heat_t, cell, offset_t, size_t = _gaussians(targets[i].to(out.dtype), k, h, w)
        logits = out[i, :k]
        p = torch.sigmoid(logits)
        pos = heat_t == 1
        neg_weight = (1 - heat_t) ** 4
        pos_term = F.logsigmoid(logits) * (1 - p) ** 2
        neg_term = F.logsigmoid(-logits) * p**2 * neg_weight
        objects = max(int(pos.sum()), 1)
        focal = -(pos_term[pos].sum() + neg_term[~pos].sum()) / objects
        if cell.shape[0]:
            at = out[i, k:, cell[:, 1], cell[:, 0]].T  # (objects, 4)
            offset = F.l1_loss(at[:, :2], offset_t, reduction="mean")
            size = F.l1_loss(at[:, 2:], size_t, reduction="mean")
            losses.append(focal + OFFSET_WEIGHT * offset + SIZE_WEIGHT * size)
        else:
            losses.append(focal)
    return torch.stack(losses) if losses else out.new_zeros(0)


def decode(out: Tensor, k: int) -> list[Detections]:
    """Detections of raw outputs ``out`` (N, k + 4, h, w), image by image."""
    n, _, h, w = out.shape
    heat = torch.sigmoid(out[:, :k].float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    results: list[Detections] = []
    for i in range(n):
        scores, where = peaks[i].flatten().topk(min(TOP_K, k * h * w))
        keep = scores >= MIN_SCORE
        scores, where = scores[keep], where[keep]
        cls, cell = where // (h * w), where % (h * w)
        cy, cx = cell // w, cell % w
        reg = out[i, k:].float().flatten(1)[:, cell]
        centre_x = (cx.float() + reg[0]) / w
        centre_y = (cy.float() + reg[1]) / h
        half_w = reg[2].clamp(max=10).exp() / w / 2
        half_h = reg[3].clamp(max=10).exp() / h / 2
        boxes = torch.stack(
            [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], dim=1
        ).clamp(0, 1)
        b, s, c = boxes.numpy(), scores.numpy(), cls.numpy()
        kept = batched_nms(b, s, c, NMS_IOU)
        results.append(
            (b[kept].astype(np.float32), s[kept].astype(np.float32), c[kept].astype(np.int64))
        )
    return results


def is_detector(model: nn.Module) -> bool:
    """Whether ``model`` detects objects: this module's ``Detector`` or a torchvision one."""
    from flsilo.models.tvdetect import is_torchvision_detector

    return isinstance(model, Detector) or is_torchvision_detector(model)


def build(
    input_shape: tuple[int, ...], num_classes: int, width: int = 32, groups: int = 8
) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError("detector needs an image input shape C,H,W")
    if input_shape[1] % 16 or input_shape[2] % 16:
        raise ValueError("detector needs a height and width divisible by 16 (e.g. 3,128,128)")
    if width < 2 or width % 2:
        raise ValueError("detector width must be an even number of channels")
    model = Detector(input_shape[0], num_classes, width, groups)
    model.flsilo_head = "head"  # type: ignore[assignment]
    return model
