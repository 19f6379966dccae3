"""flsilo's mAP against pycocotools' COCOeval on the same predictions."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools import coco, cocoeval  # the 'dev' extra (never a runtime dependency)

from flsilo.scoring.detmetrics import DetectionMeter


def xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    """Corners as COCO's ``[x, y, width, height]``."""
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _scene(rng: np.random.Generator, images: int, k: int, ties: bool):
    """Ground truth and predictions: jittered copies of true boxes, strays and misses."""
    out = []
    for _ in range(images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 90, size=(n, 2))
        wh = rng.uniform(4, 40, size=(n, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        gl = rng.integers(0, k, size=n)
        keep = rng.uniform(size=n) < 0.8
        boxes = gt[keep] + rng.normal(0, 3, size=(int(keep.sum()), 4))
        labels = np.where(rng.uniform(size=int(keep.sum())) < 0.9, gl[keep], rng.integers(0, k))
        strays = int(rng.integers(0, 4))
        sxy = rng.uniform(0, 90, size=(strays, 2))
        boxes = np.concatenate(
            [boxes, np.concatenate([sxy, sxy + rng.uniform(4, 30, (strays, 2))], 1)]
        )
        labels = np.concatenate([labels, rng.integers(0, k, size=strays)])
        scores = rng.uniform(size=len(boxes))
        if ties:
            scores = np.round(scores * 4) / 4
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
        out.append((gt, gl, boxes, scores, labels))
    return out


def _pycocotools(scene, k: int) -> tuple[float, float, list[float]]:
    images, annotations, results = [], [], []
    for i, (gt, gl, boxes, scores, labels) in enumerate(scene, start=1):
        images.append({"id": i, "width": 140, "height": 140})
        for b, c in zip(xyxy_to_xywh(gt), gl):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [float(v) for v in b],
                    "area": float(b[2] * b[3]),
                    "iscrowd": 0,
                }
            )
        for b, s, c in zip(xyxy_to_xywh(boxes), scores, labels):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [float(v) for v in b],
                    "score": float(s),
                }
            )
    truth = coco.COCO()
    truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": str(c)} for c in range(k)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        dets = truth.loadRes(results) if results else coco.COCO()
        ev = cocoeval.COCOeval(truth, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    p = ev.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all areas, 100 detections
    per_class = [float(p[:, c].mean()) if (p[:, c] > -1).all() else None for c in range(k)]
    return float(ev.stats[1]), float(ev.stats[0]), per_class


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False), (3, True)])
def test_map_equals_pycocotools(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    k = 3
    scene = _scene(rng, 12, k, ties)
    meter = DetectionMeter(k)
    for item in scene:
        meter.add(*item)
    figures = meter.finish()
    map50, map_all, per_class = _pycocotools(scene, k)
    assert figures.map50 == pytest.approx(map50, abs=1e-12)
    assert figures.map == pytest.approx(map_all, abs=1e-12)
    assert figures.per_class_ap50 == pytest.approx(per_class, abs=1e-12)
    # neither trivial nor perfect, so the comparison means something
    assert 0.05 < figures.map50 < 0.99


def test_perfect_predictions_score_one_and_misses_zero() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 50]], dtype=float)
    meter = DetectionMeter(2)
    meter.add(gt, [0, 1], gt, [0.9, 0.8], [0, 1])
    assert meter.finish().map50 == pytest.approx(1.0)
    meter = DetectionMeter(2)
    meter.add(gt, [0, 1], gt, [0.9, 0.8], [1, 0])  # right boxes, wrong classes
    figures = meter.finish()
    assert figures.map50 == 0.0 and figures.objects == 2


def test_class_without_ground_truth_is_left_out() -> None:
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    meter = DetectionMeter(3)
    meter.add(gt, [0], np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), [0.9, 0.95], [0, 2])
    figures = meter.finish()
    assert figures.per_class_ap50[1:] == (None, None)
    assert figures.per_class_ap50[0] == pytest.approx(1.0)
    assert figures.map50 == pytest.approx(1.0)


def test_class_outside_range_is_refused() -> None:
    meter = DetectionMeter(2)
    with pytest.raises(ValueError, match="class 2"):
        meter.add(np.zeros((0, 4)), [], np.array([[0, 0, 1, 1]]), [0.5], [2])
