"""Detection metrics: mean average precision at IoU 0.5 (``map50``) and over 0.5:0.95 (``map``).

Plain numpy, defined exactly as the COCO evaluation (pycocotools ``COCOeval`` with
``iouType="bbox"``, all areas, at most 100 detections an image), and the tests compare the
two on the same predictions:

- in each image and class, detections are taken in falling score order (equal scores keep
  their order), at most ``MAX_DETECTIONS``; each is matched, at each IoU threshold t, to
  the not yet matched ground-truth box of its class with the highest IoU that is at least
  t (of equal IoUs, the later box); unmatched detections are false positives;
- per class and threshold, the detections of all images (in the order images were added)
  are sorted by score, precision is made non-increasing from the right, and read at the
  101 recall points 0, 0.01, ..., 1 (0 past the highest recall reached); AP is their mean;
- a class with no ground-truth box anywhere has no AP and is left out of the means;
  ``map50`` is the mean AP at t = 0.5 over classes, ``map`` the mean over the ten
  thresholds 0.5, 0.55, ..., 0.95 and the classes. With no ground truth at all both are 0.

Boxes are corners (``x1, y1, x2, y2``) in any unit, the same within an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flsilo.scoring.boxes import iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100


@dataclass(frozen=True)
class DetectionFigures:
    """What ``DetectionMeter.finish`` measured."""

    map50: float
    map: float
    per_class_ap50: tuple[float | None, ...]
    """AP at IoU 0.5 per class (None: the class has no ground-truth box)."""
    images: int
    objects: int
    objects_per_class: tuple[int, ...] = ()


def _match(ious: np.ndarray) -> np.ndarray:
    """(thresholds, detections) True where a detection (rows of ``ious``, best first) is a
    true positive at that threshold (COCO's greedy rule, see the module docstring)."""
    nd, ng = ious.shape
    tp = np.zeros((IOU_THRESHOLDS.size, nd), dtype=bool)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(ng, dtype=bool)
        for d in range(nd):
            best, m = min(float(threshold), 1 - 1e-10), -1
            for g in range(ng):
                if taken[g] or ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m >= 0:
                taken[m] = True
                tp[t, d] = True
    return tp


def _ap(scores: np.ndarray, tp: np.ndarray, positives: int) -> np.ndarray:
    """AP at each threshold of one class, from its detections' scores and matches."""
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[:, order]
    tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_sum = np.cumsum(~tp, axis=1, dtype=np.float64)
    out = np.zeros(IOU_THRESHOLDS.size)
    nd = scores.size
    for t in range(IOU_THRESHOLDS.size):
        if nd == 0:
            continue
        recall = tp_sum[t] / positives
        precision = tp_sum[t] / (tp_sum[t] + fp_sum[t] + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.where(at < nd, precision[np.minimum(at, nd - 1)], 0.0)
        out[t] = q.mean()
    return out


class DetectionMeter:
    """Accumulates predictions and ground truth image by image; ``finish`` gives the figures."""

    def __init__(self, num_classes: int) -> None:
        self.k = num_classes
        self.scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self.matches: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self.positives = np.zeros(num_classes, dtype=np.int64)
        self.images = 0

    def add(
        self,
        gt_boxes: np.ndarray,
        gt_labels: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
    ) -> None:
        """One image: its ground truth and the model's detections (any order)."""
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.images += 1
        for c in np.unique(np.concatenate([gt_labels, labels])).tolist():
            if not 0 <= c < self.k:
                raise ValueError(f"class {c} is outside 0..{self.k - 1}")
            g = gt_boxes[gt_labels == c]
            mine = np.flatnonzero(labels == c)
            mine = mine[np.argsort(-scores[mine], kind="mergesort")][:MAX_DETECTIONS]
            self.positives[c] += len(g)
            self.scores[c].append(scores[mine])
            self.matches[c].append(_match(iou(boxes[mine], g)))

    def finish(self) -> DetectionFigures:
        ap = np.full((self.k, IOU_THRESHOLDS.size), np.nan)
        for c in range(self.k):
            if self.positives[c] == 0:
                continue
            if self.scores[c]:
                scores = np.concatenate(self.scores[c])
                tp = np.concatenate(self.matches[c], axis=1)
            else:
                scores, tp = np.zeros(0), np.zeros((IOU_THRESHOLDS.size, 0), dtype=bool)
            ap[c] = _ap(scores, tp, int(self.positives[c]))
        valid = ~np.isnan(ap[:, 0])
        return DetectionFigures(
            map50=float(ap[valid, 0].mean()) if valid.any() else 0.0,
            map=float(ap[valid].mean()) if valid.any() else 0.0,
            per_class_ap50=tuple(
                float(a) if v else None for a, v in zip(ap[:, 0], valid, strict=True)
            ),
            images=self.images,
            objects=int(self.positives.sum()),
            objects_per_class=tuple(int(v) for v in self.positives),
        )
