"""The detect task's data path: boxes follow the pixels through resize and flip, per sample;
targets of YOLO and COCO data; refusals of formats that cannot carry boxes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsilo.plans.federation import DataSpec
from flsilo.plans.plan import TaskSpec
from flsilo.plans.preprocessing import Augment, Preprocess
from flsilo.runtime.errors import DataError
from flsilo.tasks import load_task
from site_kit.data.samples import open_samples
from site_kit.data.stream import SampleSet, batches, in_order
from site_kit.preprocess import build

DETECT = TaskSpec("detect")
CLASSES = ("box", "bar")


def _yolo(root: Path, h: int, w: int, rect: tuple[int, int, int, int]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    pixels = np.zeros((h, w), dtype=np.uint8)
    x1, y1, x2, y2 = rect
    pixels[y1:y2, x1:x2] = 255
    Image.fromarray(pixels).save(root / "images" / "a.png")
    cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
    (root / "labels" / "a.txt").write_text(f"1 {cx} {cy} {bw} {bh}\n")
    return root


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_boxes_follow_pixels_through_resize_and_flip(tmp_path: Path, resize: str) -> None:
    data = _yolo(tmp_path / "d", 40, 80, (6, 10, 26, 30))  # off-centre: a flip moves it
    preprocess = Preprocess(resize=resize)
    samples = open_samples(data, None, CLASSES, (1, 32, 32), DataSpec(), task=DETECT,
                           preprocess=preprocess)  # fmt: skip
    assert samples.fmt == "yolo"
    samples = replace(samples, preprocessor=build(preprocess, (1, 32, 32), Augment(hflip=True)))
    seen = set()
    for epoch in range(8):
        x, target = SampleSet(samples, seed=5)[(epoch, 0)]
        assert target.shape == (1, 5) and target[0, 0] == 1
        ys, xs = np.nonzero(x.numpy()[0] > 0.5)
        x1, y1, x2, y2 = target[0, 1:] * 32
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1
        seen.add(bool(x1 > 16))
    assert seen == {True, False}  # both flipped and unflipped epochs were drawn


def test_batches_collate_a_list_of_box_tensors(tmp_path: Path) -> None:
    data = _yolo(tmp_path / "d", 32, 32, (4, 4, 12, 12))
    (data / "labels" / "b.txt").write_text("")  # an image with no objects
    Image.new("L", (32, 32)).save(data / "images" / "b.png")
    samples = open_samples(data, "yolo", CLASSES, (1, 32, 32), DataSpec(), task=DETECT)
    [(x, y)] = list(batches(samples, in_order(2, 8)))
    assert x.shape == (2, 1, 32, 32)
    assert [tuple(t.shape) for t in y] == [(1, 5), (0, 5)]
    targets = samples.targets()
    assert targets.dtype == object and load_task("detect").counts(targets, CLASSES) == [0, 1]


def test_coco_manifest_targets(tmp_path: Path) -> None:
    _yolo(tmp_path, 20, 40, (0, 0, 10, 10))
    doc = {
        "images": [{"id": 5, "file_name": "images/a.png", "width": 40, "height": 20}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 9, "bbox": [4, 2, 20, 10]}],
        "categories": [{"id": 9, "name": "bar"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    samples = open_samples(path, None, CLASSES, (1, 20, 40), DataSpec(), task=DETECT)
    assert samples.fmt == "coco"
    assert np.allclose(samples.target(0), [[1, 0.1, 0.1, 0.6, 0.6]])
    doc["annotations"][0]["bbox"] = [30, 2, 20, 10]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as err:
        open_samples(path, None, CLASSES, (1, 20, 40), DataSpec(), task=DETECT)
    assert f"{path}: annotations[0] (id 1)" in str(err.value) and "outside" in str(err.value)
    doc["categories"][0]["name"] = "bus"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="category 'bus' is not a class"):
        open_samples(path, None, CLASSES, (1, 20, 40), DataSpec(), task=DETECT)
    doc["images"][0]["width"] = 41
    doc["categories"][0]["name"] = "bar"
    doc["annotations"][0]["bbox"] = [4, 2, 20, 10]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="the image is 40x20 pixels, the manifest says 41x20"):
        open_samples(path, None, CLASSES, (1, 20, 40), DataSpec(), task=DETECT)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a COCO manifest") as err:
        open_samples(path, None, CLASSES, (1, 20, 40), DataSpec(), task=DETECT)
    assert err.value.code == "bad-data"


def test_formats_that_cannot_carry_boxes_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("path,label\na.png,box\n")
    with pytest.raises(DataError, match="csv data cannot carry the targets of task detect") as err:
        open_samples(csv, "images-csv", CLASSES, (1, 8, 8), DataSpec(), task=DETECT)
    assert "yolo or coco" in err.value.hint
    data = _yolo(tmp_path / "d", 8, 8, (0, 0, 4, 4))
    with pytest.raises(DataError, match="yolo data cannot carry the targets of task classify"):
        open_samples(data, "yolo", CLASSES, (1, 8, 8), DataSpec())


def test_missing_label_file_is_a_bad_record(tmp_path: Path) -> None:
    data = _yolo(tmp_path / "d", 8, 8, (0, 0, 4, 4))
    (data / "labels" / "a.txt").unlink()
    with pytest.raises(DataError) as err:
        open_samples(data, "yolo", CLASSES, (1, 8, 8), DataSpec(), task=DETECT)
    assert str(data / "labels" / "a.txt") in str(err.value)
    assert "no label file (write an empty one" in str(err.value)


def test_an_image_is_exactly_right_only_with_its_objects_and_nothing_else() -> None:
    from flsilo.tasks.detect import exactly_right

    gt = np.array([[0, 0.1, 0.1, 0.3, 0.3], [1, 0.5, 0.5, 0.9, 0.9]])
    boxes = np.array([[0.5, 0.5, 0.88, 0.9], [0.1, 0.12, 0.3, 0.3], [0, 0, 1, 1]])
    labels = np.array([1, 0, 0])
    assert exactly_right(gt, boxes, np.array([0.9, 0.8, 0.2]), labels)  # the third is unsure
    assert not exactly_right(gt, boxes, np.array([0.9, 0.8, 0.6]), labels)  # a confident extra
    assert not exactly_right(gt, boxes[:2], np.array([0.9, 0.8]), np.array([0, 1]))  # swapped
    assert not exactly_right(gt, boxes[:1], np.array([0.9]), labels[:1])  # one missed
    assert exactly_right(np.zeros((0, 5)), boxes, np.array([0.1, 0.2, 0.3]), labels)
