"""``yolo``: images with one YOLO label file each, for the ``detect`` task.

The layout labelling tools export (Ultralytics, CVAT, Label Studio): ``DATA/images/`` holds
the images (sub-folders allowed) and ``DATA/labels/`` a text file per image at the same
relative path with the suffix ``.txt`` (``images/cam1/0001.jpg`` ->
``labels/cam1/0001.txt``). Each line is ``class cx cy w h``: the class an index into the
federation's ``--classes`` (in that order) and the box normalised to the image
(``flsilo.scoring.detlabels``). An empty label file is an image with no objects.

Records come in path order. An image without a label file, or whose label file has a bad
line (a box outside the image, an unknown class id, a malformed line), is a bad record
naming the label file and line, so nothing is dropped silently: without ``--skip-bad`` the
command stops at the first one, with it the image is skipped and counted. Each record's
label text holds the image's size (read from its header) and its boxes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError
from flsilo.scoring.detlabels import YOLO_HINT, encode, parse_yolo
from site_kit.data import BadRecord, DataContext
from site_kit.data.imagefolder import check_shape
from site_kit.data.pillow import EXTENSIONS, decode_file
from site_kit.data.records import Identify, RawImage, Record

KIND = "image"
IMAGES, LABELS = "images", "labels"
MAX_LABEL_BYTES = 1 << 20
"""A label file larger than this (about 30,000 boxes) is refused rather than read."""
LAYOUT_HINT = (
    "YOLO data is a folder holding images/ and labels/ (a .txt file per image at the same "
    "relative path)"
)


def index(path: Path, ctx: DataContext, identify: Identify) -> Iterator[Record | BadRecord]:
    check_shape(path, ctx.input_shape, "detection images")
    images, labels = path / IMAGES, path / LABELS
    if not path.is_dir() or not images.is_dir() or not labels.is_dir():
        raise DataError(
            "not a YOLO data folder (no images/ and labels/ folders in it)",
            path=path,
            code=Code.DATA_MISSING,
            hint=LAYOUT_HINT,
        )
    files = sorted(
        p for p in images.rglob("*")
        if p.suffix.lower() in EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(images).parts)
    )  # fmt: skip
    for file in files:
        label = (labels / file.relative_to(images)).with_suffix(".txt")
        yield _record(file, label, ctx, identify)


def _record(file: Path, label: Path, ctx: DataContext, identify: Identify) -> Record | BadRecord:
    text = _label_text(label)
    if isinstance(text, BadRecord):
        return text
    boxes, problems = parse_yolo(text, ctx.classes)
    if problems:
        first = problems[0]
        more = f" ({len(problems) - 1} more bad lines in this file)" if len(problems) > 1 else ""
        return BadRecord(f"{label}:{first.line}", f"{first.why}{more}; {YOLO_HINT}")
    try:
        with Image.open(file) as opened:
            width, height = opened.size
        return identify(file).record(-1, label=encode((height, width), boxes))
    except (UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return BadRecord(str(file), f"cannot decode image ({exc.__class__.__name__})")
    except OSError as exc:
        return BadRecord(str(file), f"cannot read file ({exc.strerror or exc.__class__.__name__})")


def _label_text(label: Path) -> str | BadRecord:
    try:
        with label.open("rb") as fh:
            data = fh.read(MAX_LABEL_BYTES + 1)
    except FileNotFoundError:
        return BadRecord(
            str(label),
            "the image has no label file (write an empty one for an image with no objects)",
        )
    except OSError as exc:
        return BadRecord(str(label), f"cannot read the label file ({exc.strerror})")
    if len(data) > MAX_LABEL_BYTES:
        return BadRecord(str(label), f"the label file is over {MAX_LABEL_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return BadRecord(f"{label}:{line}", "the line is not UTF-8 text")


def decode(record: Record, ctx: DataContext) -> RawImage:
    file = ctx.root / record.source
    return decode_file(file, str(file))
