"""Detection labels: YOLO label files, COCO annotations, and the index's text of a target.

No torch, no numpy beyond arrays: the site's data adapters (``site_kit.data.yolo``,
``site_kit.data.coco``) parse here, and the ``detect`` task decodes what they stored.

**YOLO** (one text file per image, one object per line): ``class cx cy w h``, the class an
integer index into the federation's ``--classes`` and the box's centre, width and height
as fractions of the image (0..1). Blank lines and lines starting with ``#`` are skipped;
an empty file is an image with no objects. A line that is not five numbers, a class that
is not one of the federation's, a box of zero or negative size, or a box reaching outside
the image by more than ``TOLERANCE`` (labelling tools round) is a problem naming its line;
a box within the tolerance is clipped to the image.

**COCO** annotations: ``bbox`` is ``[x, y, width, height]`` in pixels from the image's
top-left corner, checked against the image entry's ``width`` and ``height`` the same way.

**The index's text** of one image's target (``encode`` / ``decode``): its size as stored
and its boxes normalised to it, ``H W;c x1 y1 x2 y2;...`` with six decimals. The size
lets the plan's resize move the boxes exactly as the pixels (``flsilo.scoring.boxes``) without
decoding the image again; the text is hashed into the index like any label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOLERANCE = 0.002
"""How far (a fraction of the image) a box may reach past an edge before it is refused."""
YOLO_HINT = "a YOLO label line is 'class cx cy w h': a class index and a box as fractions 0..1"


@dataclass(frozen=True)
class BoxProblem:
    """One line (or annotation) that is not a usable box: where, and why."""

    line: int
    why: str


def _class(text: str, classes: Sequence[str]) -> int | str:
    try:
        value = float(text)
    except ValueError:
        return f"class {text!r} is not a class index"
    if not value.is_integer():
        return f"class {text!r} is not a whole number"
    c = int(value)
    if not 0 <= c < len(classes):
        return (
            f"class id {c} is not one of this federation's {len(classes)} classes "
            f"(0..{len(classes) - 1}: {', '.join(classes)})"
        )
    return c


def check_box(x1: float, y1: float, x2: float, y2: float) -> tuple[float, ...] | str:
    """A normalised box clipped to the image, or why it cannot be one."""
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "a coordinate is not a finite number"
    if x2 <= x1 or y2 <= y1:
        return f"the box has no area (width {x2 - x1:g}, height {y2 - y1:g})"
    for name, low, high in (("x", x1, x2), ("y", y1, y2)):
        if low < -TOLERANCE or high > 1 + TOLERANCE:
            return (
                f"the box reaches outside the image ({name} from {low:.4g} to {high:.4g} "
                "of the image's size; it must stay within 0..1)"
            )
    return tuple(min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))


def parse_yolo_line(text: str, classes: Sequence[str]) -> tuple[float, ...] | str | None:
    """(class, x1, y1, x2, y2) normalised, why the line is not a box, or None (blank)."""
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    cells = line.split()
    if len(cells) != 5:
        return f"{len(cells)} fields, not 5 (class cx cy w h)"
    c = _class(cells[0], classes)
    if isinstance(c, str):
        return c
    try:
        cx, cy, w, h = (float(v) for v in cells[1:])
    except ValueError:
        return "the box is not four numbers (cx cy w h)"
    box = check_box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    return box if isinstance(box, str) else (float(c), *box)


def parse_yolo(text: str, classes: Sequence[str]) -> tuple[np.ndarray, list[BoxProblem]]:
    """A YOLO label file's boxes ((n, 5): class, x1, y1, x2, y2) and its problems."""
    rows: list[tuple[float, ...]] = []
    problems: list[BoxProblem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = parse_yolo_line(line, classes)
        if isinstance(parsed, str):
            problems.append(BoxProblem(number, parsed))
        elif parsed is not None:
            rows.append(parsed)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5), problems


def coco_box(bbox: object, width: float, height: float) -> tuple[float, ...] | str:
    """A COCO ``bbox`` of an image ``width`` x ``height`` as a normalised box, or why not."""
    if not isinstance(bbox, list) or len(bbox) != 4:
        return "bbox is not a list [x, y, width, height]"
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        return "bbox holds something other than numbers"
    x, y, w, h = (float(v) for v in bbox)
    return check_box(x / width, y / height, (x + w) / width, (y + h) / height)


def encode(size: tuple[int, int], boxes: np.ndarray) -> str:
    """The index's text of an image of ``size`` (height, width) and its (n, 5) boxes."""
    parts = [f"{int(size[0])} {int(size[1])}"]
    for c, x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 5).tolist():
        parts.append(f"{int(c)} {x1:.6f} {y1:.6f} {x2:.6f} {y2:.6f}")
    return ";".join(parts)


def decode(text: str) -> tuple[tuple[int, int], np.ndarray]:
    """``encode``'s inverse: the image's (height, width) and its (n, 5) float32 boxes."""
    head, *rows = text.split(";")
    h, w = (int(v) for v in head.split())
    boxes = np.asarray([[float(v) for v in row.split()] for row in rows], dtype=np.float32)
    return (h, w), boxes.reshape(-1, 5)
