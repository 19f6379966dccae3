"""Box geometry: overlap, NMS, and boxes moved exactly as the plan's resize moves pixels."""

from __future__ import annotations

import numpy as np
import pytest

from flsilo.plans.preprocessing import Preprocess
from flsilo.scoring.boxes import (
    batched_nms,
    hflip_boxes,
    iou,
    nms,
    resize_boxes,
)
from site_kit.data.records import RawImage
from site_kit.preprocess import build


def test_iou_values() -> None:
    a = np.array([[0, 0, 10, 10]], dtype=float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    assert iou(a, b) == pytest.approx(np.array([[50 / 150, 0.0, 1.0]]))
    assert iou(np.zeros((1, 4)), np.zeros((1, 4)))[0, 0] == 0.0


def test_nms_keeps_best_and_distinct() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], dtype=float
    )
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    # the same boxes under different labels do not suppress each other
    kept = batched_nms(boxes, scores, np.array([0, 0, 0, 1]), 0.5)
    assert kept.tolist() == [1, 3, 2]


def _marked(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    pixels = np.zeros((h, w), dtype=np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = 255
    return pixels


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "shorter-side:1.0", "shorter-side:0.8"])
@pytest.mark.parametrize("raw_hw", [(60, 100), (100, 60), (64, 64)])
def test_resize_moves_boxes_with_pixels(resize: str, raw_hw: tuple[int, int]) -> None:
    """A white rectangle's box, moved by resize_boxes, frames the rectangle the preprocessing
    draws (to within a pixel of bilinear blur)."""
    h, w = raw_hw
    rect = (w // 2 - 8, h // 2 - 10, w // 2 + 12, h // 2 + 6)
    pre = build(Preprocess(resize=resize), (1, 32, 32))
    image = pre.scaled(RawImage(_marked(h, w, rect)))[0]
    from flsilo.plans.preprocessing import parse_resize

    policy, ratio = parse_resize(resize)
    norm = np.array([[rect[0] / w, rect[1] / h, rect[2] / w, rect[3] / h]])
    moved, labels = resize_boxes(norm, np.array([2]), (h, w), policy, ratio, (32, 32))
    assert labels.tolist() == [2]
    x1, y1, x2, y2 = moved[0] * 32
    ys, xs = np.nonzero(image > 0.5)
    assert abs(xs.min() - x1) <= 1.0 and abs(xs.max() + 1 - x2) <= 1.0
    assert abs(ys.min() - y1) <= 1.0 and abs(ys.max() + 1 - y2) <= 1.0


def test_crop_drops_boxes_mostly_outside() -> None:
    # shorter-side on a wide image crops the sides: a box at the far left edge goes
    boxes = np.array([[0.0, 0.4, 0.05, 0.6], [0.45, 0.4, 0.55, 0.6]])
    moved, labels = resize_boxes(boxes, np.array([0, 1]), (50, 200), "shorter-side", 1.0, (32, 32))
    assert labels.tolist() == [1]
    assert moved.min() >= 0 and moved.max() <= 1


def test_hflip() -> None:
    assert np.allclose(hflip_boxes(np.array([[0.1, 0.2, 0.3, 0.4]])), [[0.7, 0.2, 0.9, 0.4]])
