"""YOLO and COCO label parsing: every bad line named with its reason; the index's text."""

from __future__ import annotations

import numpy as np
import pytest

from flsilo.scoring.detlabels import coco_box, decode, encode, parse_yolo

CLASSES = ("car", "person")


def test_yolo_file_parses_to_corner_boxes() -> None:
    boxes, problems = parse_yolo("0 0.5 0.5 0.2 0.4\n\n# comment\n1 0.25 0.75 0.5 0.5\n", CLASSES)
    assert problems == []
    assert np.allclose(boxes, [[0, 0.4, 0.3, 0.6, 0.7], [1, 0.0, 0.5, 0.5, 1.0]])


def test_empty_file_is_an_image_without_objects() -> None:
    boxes, problems = parse_yolo("", CLASSES)
    assert boxes.shape == (0, 5) and problems == []


@pytest.mark.parametrize(
    "line,why",
    [
        ("0 0.95 0.5 0.2 0.2", "reaches outside the image (x from 0.85 to 1.05"),
        (
            "2 0.5 0.5 0.2 0.2",
            "class id 2 is not one of this federation's 2 classes (0..1: car, person)",
        ),
        ("-1 0.5 0.5 0.2 0.2", "class id -1"),
        ("0 0.5 0.5 0.2", "4 fields, not 5"),
        ("car 0.5 0.5 0.2 0.2", "class 'car' is not a class index"),
        ("0.5 0.5 0.5 0.2 0.2", "not a whole number"),
        ("0 0.5 0.5 zero 0.2", "not four numbers"),
        ("0 0.5 0.5 0 0.2", "no area"),
        ("0 nan 0.5 0.1 0.2", "not a finite number"),
    ],
)
def test_bad_lines_are_named(line: str, why: str) -> None:
    boxes, problems = parse_yolo(f"1 0.5 0.5 0.1 0.1\n{line}\n", CLASSES)
    assert len(problems) == 1 and problems[0].line == 2
    assert why in problems[0].why
    assert len(boxes) == 1  # the good line is kept


def test_rounding_past_the_edge_is_clipped() -> None:
    boxes, problems = parse_yolo("0 0.9005 0.5 0.2 0.2\n", CLASSES)
    assert problems == [] and boxes[0, 3] == 1.0


def test_coco_box() -> None:
    assert coco_box([10, 20, 30, 40], 100, 200) == pytest.approx((0.1, 0.1, 0.4, 0.3))
    assert "outside" in coco_box([80, 20, 30, 40], 100, 200)
    assert "not a list" in coco_box({"x": 1}, 100, 100)
    assert "other than numbers" in coco_box([1, 2, "3", 4], 100, 100)


def test_index_text_round_trips() -> None:
    boxes = np.array([[1, 0.1, 0.2, 0.3, 0.4], [0, 0.5, 0.5, 1.0, 1.0]])
    text = encode((480, 640), boxes)
    assert (
        text
        == "480 640;1 0.100000 0.200000 0.300000 0.400000;0 0.500000 0.500000 1.000000 1.000000"
    )
    size, back = decode(text)
    assert size == (480, 640) and np.allclose(back, boxes) and back.dtype == np.float32
    assert decode(encode((8, 8), np.zeros((0, 5))))[1].shape == (0, 5)
