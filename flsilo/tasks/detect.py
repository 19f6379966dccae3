"""``detect``: objects in an image, each a class and a box; mAP@0.5 is the primary metric.

Targets come from the detection formats (``yolo``: a label file per image; ``coco``: a
JSON manifest, video frames included), never from a CSV cell: the index stores each
image's size and boxes as text (``flsilo.scoring.detlabels``). The targets are *geometric*: the
data pipeline moves the boxes with the pixels (``place``: the plan's resize and a
left-right flip), so a batch's targets are boxes normalised to the model input, one
(n, 5) float32 tensor per image (class, x1, y1, x2, y2). The plan allows ``hflip``,
``jitter`` and ``noise`` augmentation; ``crop`` and ``rotate`` would move objects away
from their boxes and are refused at ``hub init``.

Models: the built-in ``detector`` (``flsilo.models.detector``) or torchvision's detection
models (``torchvision:ssdlite320_mobilenet_v3_large``, ``flsilo.models.tvdetect``); each
computes its own loss from the boxes. Evaluation decodes boxes and measures mAP@0.5
(``map50``) and mAP@0.5:0.95 (``map``) with ``flsilo.scoring.detmetrics`` (the COCO definitions),
per-class AP@0.5, and as ``accuracy`` the share of images whose detections scoring at least
``ACCURACY_SCORE`` are exactly their objects (one-to-one, right class, IoU >= 0.5).

No closed-form heads. DP-SGD trains the built-in ``detector``: ``loss(..., "sum")`` is the
sum of its per-image losses, each normalised by the image's own object count (not the
batch's), and the network mixes no images (GroupNorm, convolutions), so the per-sample
gradients Opacus clips are each image's own gradient (tests/unit/test_detect_dp.py checks
them against per-image autograd). The ``mean`` loss of plain training is the batch mean of
the same per-image losses. torchvision's detection models return one loss for the whole
batch, so a DP plan with one is refused at ``hub init`` (``dp_problem``) and by the site.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flsilo.plans.plan import TaskSpec
from flsilo.plans.preprocessing import parse_resize
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.scoring.boxes import hflip_boxes, iou, resize_boxes
from flsilo.scoring.detlabels import decode as decode_label
from flsilo.scoring.detmetrics import DetectionMeter
from flsilo.tasks.base import Evaluation, Evaluator, LabelError, Target, Task

if TYPE_CHECKING:
    import torch

ACCURACY_SCORE = 0.5
BOX_FORMATS = ("yolo", "coco")
TORCHVISION_DP = (
    "torchvision's detection models return one loss for the whole batch, not a loss per "
    "image that DP-SGD could clip"
)


class Detect(Task):
    name = "detect"
    primary_metric = "map50"
    closed_form = False
    supports_dp = True
    formats = BOX_FORMATS
    geometric = True

    # -- targets ------------------------------------------------------------------------------
    def label_columns(self, spec: TaskSpec, classes: tuple[str, ...]) -> tuple[str, ...]:
        del spec, classes
        return ()

    def parse(self, cells: Sequence[str], spec: TaskSpec, classes: tuple[str, ...]) -> Target:
        del cells, spec, classes
        raise LabelError("detection targets are boxes: give the data as --data-format yolo or coco")

    def decode(self, target: Target) -> np.ndarray:
        """The boxes normalised to the image as stored (before any resize)."""
        return decode_label(target.text)[1]

    def place(
        self, target: Target, resize: str, input_size: tuple[int, int], flipped: bool
    ) -> np.ndarray:
        """The boxes normalised to the model input: moved by ``resize`` and the flip."""
        size, boxes = decode_label(target.text)
        policy, ratio = parse_resize(resize)
        moved, labels = resize_boxes(boxes[:, 1:], boxes[:, 0], size, policy, ratio, input_size)
        if flipped:
            moved = hflip_boxes(moved)
        return np.concatenate([labels[:, None], moved], axis=1).astype(np.float32)

    def counts(self, targets: Any, classes: tuple[str, ...]) -> list[int]:
        """Objects per class."""
        out = np.zeros(len(classes), dtype=np.int64)
        for t in targets:
            out += np.bincount(np.asarray(t)[:, 0].astype(np.int64), minlength=len(classes))
        return out.tolist()

    # -- model side ---------------------------------------------------------------------------
    def model_problem(
        self, model: torch.nn.Module, input_shape: tuple[int, ...], spec: TaskSpec
    ) -> str | None:
        del input_shape, spec
        from flsilo.models.detector import is_detector

        if is_detector(model):
            return None
        return "it is not an object detector (use detector or a torchvision detection model)"

    def dp_problem(self, model: torch.nn.Module) -> str | None:
        from flsilo.models import tvdetect

        if tvdetect.is_torchvision_detector(model):
            return TORCHVISION_DP
        return None

    def collate(self, targets: Sequence[np.ndarray]) -> Any:
        import torch

        return [torch.from_numpy(np.asarray(t, dtype=np.float32).reshape(-1, 5)) for t in targets]

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: Any, reduction: str) -> torch.Tensor:
        if reduction == "sum":  # DP-SGD: the per-image losses Opacus clips one by one
            return per_image_losses(model, x, y).sum()
        return detector_loss(model, x, y)

    def evaluator(self, classes: tuple[str, ...], spec: TaskSpec) -> Evaluator:
        del spec
        return DetectEvaluator(classes)


def _not_a_detector(model: Any) -> UsageError:
    return UsageError(
        f"the model ({type(model).__name__}) is not a detector",
        code=Code.BAD_MODEL_SPEC,
        hint="use --model detector or a torchvision detection model "
        "(torchvision:ssdlite320_mobilenet_v3_large) with --task detect",
    )


def detector_loss(model: torch.nn.Module, x: torch.Tensor, y: list[torch.Tensor]) -> torch.Tensor:
    """The batch's mean loss, however the model computes it."""
    from flsilo.models import tvdetect
    from flsilo.models.detector import Detector, centernet_loss

    if x.shape[0] == 0:  # an empty batch: no loss, but one that backward() accepts
        return torch_zero(model)
    inner = unwrapped(model)
    if isinstance(inner, Detector):
        return centernet_loss(model(x), y, inner.num_classes).mean()
    if tvdetect.is_torchvision_detector(inner):
        return tvdetect.loss(model, x, y)
    raise _not_a_detector(inner)


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel's (torchrun) or Opacus's (DP-SGD) wrapper, or
    ``model`` itself. The forward goes through the wrapper (its hooks need that); the facts
    (which detector, how many classes) come from the model inside."""
    import torch

    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return getattr(model, "_module", model)  # Opacus's GradSampleModule


def per_image_losses(
    model: torch.nn.Module, x: torch.Tensor, y: list[torch.Tensor]
) -> torch.Tensor:
    """Each image's loss (N,), computed through ``model`` as given: under DP-SGD that is
    Opacus's ``GradSampleModule`` around the detector, whose hooks take per-sample gradients
    (of an empty Poisson batch too, so that its noisy step has them to clip)."""
    from flsilo.models import tvdetect
    from flsilo.models.detector import Detector, centernet_loss

    inner = unwrapped(model)
    if isinstance(inner, Detector):
        out = model(x)
        if x.shape[0] == 0:  # no images, no losses: (0,), but on the graph for backward()
            return out.flatten(1).sum(dim=1)
        return centernet_loss(out, y, inner.num_classes)
    if tvdetect.is_torchvision_detector(inner):
        raise UsageError(
            f"the model ({type(inner).__name__}) cannot be trained with DP-SGD: {TORCHVISION_DP}",
            code=Code.DP_MODEL,
            hint="use --model detector for a DP federation",
        )
    raise _not_a_detector(inner)


def torch_zero(model: torch.nn.Module) -> torch.Tensor:
    return sum(
        (p.sum() * 0 for p in model.parameters()), start=next(model.parameters()).new_zeros(())
    )


def detections(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[np.ndarray, ...]]:
    """Per image: boxes (normalised corners), scores and class indices."""
    from flsilo.models import tvdetect
    from flsilo.models.detector import Detector

    if isinstance(model, Detector):
        return list(model.detect(x))
    if tvdetect.is_torchvision_detector(model):
        return list(tvdetect.detect(model, x))
    raise _not_a_detector(model)


def exactly_right(
    gt: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> bool:
    """Whether the confident detections are the image's objects, one-to-one at IoU 0.5."""
    sure = scores >= ACCURACY_SCORE
    boxes, labels = boxes[sure], labels[sure]
    if len(boxes) != len(gt):
        return False
    if len(gt) == 0:
        return True
    overlap = iou(boxes, gt[:, 1:]) * (labels[:, None] == gt[None, :, 0])
    taken = np.zeros(len(gt), dtype=bool)
    for d in np.argsort(-scores[sure], kind="stable"):
        candidates = np.where(taken, -1.0, overlap[d])
        g = int(candidates.argmax())
        if candidates[g] < 0.5:
            return False
        taken[g] = True
    return True


class DetectEvaluator(Evaluator):
    """Loss, mAP (flsilo.scoring.detmetrics) and the share of images found exactly right."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = classes
        self.meter = DetectionMeter(len(classes))
        self.total_loss = 0.0
        self.right = 0
        self.n = 0

    def add(self, model: torch.nn.Module, x: torch.Tensor, y: Any) -> None:
        from flsilo.models import tvdetect

        if not tvdetect.is_torchvision_detector(model):  # torchvision's losses need train mode
            self.total_loss += float(detector_loss(model, x, y)) * x.shape[0]
        for t, (boxes, scores, labels) in zip(y, detections(model, x), strict=True):
            gt = t.cpu().numpy().astype(np.float64)
            self.meter.add(gt[:, 1:], gt[:, 0], boxes, scores, labels)
            self.right += exactly_right(gt, boxes, scores, labels)
        self.n += x.shape[0]

    def finish(self, *, bootstrap_seed: int | None = None) -> Evaluation:
        del bootstrap_seed
        figures = self.meter.finish()
        accuracy = self.right / self.n if self.n else 0.0
        per_class = {
            name: {"ap50": ap, "objects": objects}
            for name, ap, objects in zip(
                self.classes, figures.per_class_ap50, figures.objects_per_class, strict=True
            )
        }
        return Evaluation(
            loss=self.total_loss / self.n if self.n else 0.0,
            accuracy=accuracy,
            samples=self.n,
            values={"map50": figures.map50, "map": figures.map, "accuracy": accuracy},
            figures={
                "samples": self.n,
                "map50": figures.map50,
                "map": figures.map,
                "accuracy": accuracy,
                "objects": figures.objects,
                "per_class": per_class,
            },
        )


TASK = Detect()
