"""Bounding boxes: overlap, non-maximum suppression, and the plan's geometry.

Plain numpy (no torch, no torchvision), so the site's data workers, the metrics and the
tests share one definition. A box array is float, shape (n, 4), corners ``x1, y1, x2, y2``
with ``x2 >= x1`` and ``y2 >= y1``; *normalised* boxes are fractions of the image's width
and height (0..1), as YOLO labels are; the model input's boxes are normalised to the input.

The geometry functions move boxes exactly as ``site_kit.preprocess`` moves pixels: the
resize policies (``stretch``, ``letterbox``, ``shorter-side[:R]``) and a left-right flip.
A box cut by a crop keeps its part inside the picture; a box left with less than
``MIN_VISIBLE`` of its area, or under half a pixel wide or high, is dropped.
"""

from __future__ import annotations

import numpy as np

MIN_VISIBLE = 0.25
"""A cropped box is kept while at least this share of its area stays in the picture."""


def area(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union; 0 where both boxes are empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds ``threshold``
    (torchvision's ``nms`` rule; equal scores keep their given order).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if order.size == 0:
        return order.astype(np.int64)
    overlaps = iou(boxes[order], boxes[order])
    suppressed = np.zeros(order.size, dtype=bool)
    keep = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= overlaps[i] > threshold
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float
) -> np.ndarray:
    """``nms`` within each label separately; indices kept, highest score first."""
    labels = np.asarray(labels).reshape(-1)
    kept = [np.flatnonzero(labels == c)[nms(boxes[labels == c], scores[labels == c], threshold)]
            for c in np.unique(labels)]  # fmt: skip
    if not kept:
        return np.zeros(0, dtype=np.int64)
    out = np.concatenate(kept)
    return out[np.argsort(-np.asarray(scores)[out], kind="stable")]


def _clip_keep(boxes: np.ndarray, labels: np.ndarray, w: float, h: float) -> tuple:
    """Boxes clipped to a w x h picture (pixels), and which of them are kept."""
    before = area(boxes)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, w)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, h)
    after = area(clipped)
    with np.errstate(divide="ignore", invalid="ignore"):
        visible = np.where(before > 0, after / np.where(before > 0, before, 1), 0.0)
    wide = (clipped[:, 2] - clipped[:, 0] >= 0.5) & (clipped[:, 3] - clipped[:, 1] >= 0.5)
    keep = (visible >= MIN_VISIBLE) & wide
    return clipped[keep], labels[keep]


def resize_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    raw_size: tuple[int, int],
    policy: str,
    ratio: float,
    input_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised boxes of a ``raw_size`` (height, width) image, after the plan's resize.

    ``policy`` and ``ratio`` as ``flsilo.plans.preprocessing.parse_resize`` returns them;
    ``input_size`` is the model input's (height, width). Returns the boxes normalised to
    the input, and their labels (boxes cropped away are dropped with their labels).
    """
    h, w = raw_size
    height, width = input_size
    px = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * [w, h, w, h]
    labels = np.asarray(labels).reshape(-1)
    if (h, w) == (height, width) and (policy != "shorter-side" or ratio == 1.0):
        out, keep_labels = px, labels
    elif policy == "stretch":
        out, keep_labels = px * [width / w, height / h, width / w, height / h], labels
    elif policy == "letterbox":
        scale = min(width / w, height / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        top, left = (height - nh) // 2, (width - nw) // 2
        sx, sy = nw / w, nh / h
        out, keep_labels = px * [sx, sy, sx, sy] + [left, top, left, top], labels
    else:  # shorter-side: scale to cover the input enlarged by 1/ratio, then centre-crop
        scale = max(width / w, height / h) / ratio
        nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
        top, left = (nh - height) // 2, (nw - width) // 2
        sx, sy = nw / w, nh / h
        moved = px * [sx, sy, sx, sy] - [left, top, left, top]
        out, keep_labels = _clip_keep(moved, labels, width, height)
    return out / [width, height, width, height], keep_labels


def hflip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Normalised boxes after the picture is flipped left-right."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], axis=1)
