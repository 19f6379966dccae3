"""``coco``: a COCO JSON manifest of images (or video frames) and their boxes, for ``detect``.

The file (``--data PATH/annotations.json``) holds ``images`` (``id``, ``file_name``
relative to the JSON's folder, ``width``, ``height``), ``annotations`` (``image_id``,
``category_id``, ``bbox`` as ``[x, y, width, height]`` in pixels) and ``categories``
(``id``, ``name``). Categories are matched to the federation's ``--classes`` by name, so
their ids and order do not matter.

Video frames: an image entry whose ``file_name`` is a clip (``.mp4``, ``.mkv``, ...; the
``video`` extra) and which has ``time_s`` is the frame of that clip at that time, decoded
by the video adapter (``site_kit.data.video``): the labels are per frame.

Records come in the order of ``images``. An image whose file is missing or leaves the
JSON's folder, whose size differs from its entry, or that has an annotation with a box
outside the image, a category that is not a class of the federation, a crowd region
(``iscrowd``: not supported) or a malformed ``bbox`` is a bad record naming the entry
(``annotations.json: annotations[12] (id 40)``). A file that is not a COCO document is an
error about the whole file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flsilo.fs.untrusted import read_bounded
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError
from flsilo.scoring.detlabels import coco_box, encode
from flsilo.scoring.detlabels import decode as decode_label
from site_kit.data import BadRecord, DataContext
from site_kit.data import manifest as csv_manifest
from site_kit.data.imagefolder import check_shape
from site_kit.data.pillow import EXTENSIONS, decode_file
from site_kit.data.records import Identify, RawImage, Record
from site_kit.data.sampling import name as frame_name

KIND = "image"
MAX_BYTES = 1 << 30
HINT = (
    "a COCO manifest is a JSON object with lists 'images' (id, file_name, width, height), "
    "'annotations' (image_id, category_id, bbox) and 'categories' (id, name)"
)
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts"}


def _load(path: Path) -> dict[str, Any]:
    if path.is_dir() or path.suffix.lower() != ".json":
        raise DataError(
            "COCO data is a .json manifest", path=path, code=Code.DATA_FORMAT, hint=HINT
        )
    data = read_bounded(path, MAX_BYTES, follow=True)  # too large, unreadable: one line each
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DataError(
            f"not JSON ({str(exc)[:120]})", path=path, code=Code.BAD_DATA, hint=HINT
        ) from exc
    if not isinstance(document, dict) or not all(
        isinstance(document.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DataError(
            "not a COCO manifest (no lists images, annotations and categories)",
            path=path,
            code=Code.BAD_DATA,
            hint=HINT,
        )
    return document


def _categories(document: dict[str, Any], path: Path) -> dict[Any, str]:
    names: dict[Any, str] = {}
    for i, entry in enumerate(document["categories"]):
        if (
            not isinstance(entry, dict)
            or "id" not in entry
            or not isinstance(entry.get("name"), str)
        ):
            raise DataError(
                f"categories[{i}] has no id and name", path=path, code=Code.BAD_DATA, hint=HINT
            )
        names[entry["id"]] = entry["name"]
    return names


def _size(entry: dict[str, Any]) -> tuple[int, int] | None:
    w, h = entry.get("width"), entry.get("height")
    if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
        return h, w
    return None


def index(path: Path, ctx: DataContext, identify: Identify) -> Iterator[Record | BadRecord]:
    check_shape(path, ctx.input_shape, "detection images")
    document = _load(path)
    categories = _categories(document, path)
    by_image: dict[Any, list[tuple[int, Any]]] = {}
    for i, ann in enumerate(document["annotations"]):
        key = ann.get("image_id") if isinstance(ann, dict) else None
        by_image.setdefault(key, []).append((i, ann))
    seen: set[str] = set()
    clips: dict[Path, Any] = {}
    for i, entry in enumerate(document["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            yield BadRecord(where, "the image entry has no file_name")
            continue
        size = _size(entry)
        if size is None:
            yield BadRecord(where, "the image entry has no positive integer width and height")
            continue
        boxes = _boxes(path, by_image.pop(entry.get("id"), []), categories, size, ctx)
        if isinstance(boxes, BadRecord):
            yield boxes
            continue
        yield _record(entry, where, size, boxes, seen, ctx, identify, clips)
    for key, anns in by_image.items():
        i, ann = anns[0]
        yield BadRecord(
            _where(path, i, ann), f"the annotation's image_id {key!r} is not an image's id"
        )


def _where(path: Path, i: int, ann: Any) -> str:
    ident = f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else ""
    return f"{path}: annotations[{i}]{ident}"


def _boxes(
    path: Path,
    anns: list[tuple[int, Any]],
    categories: dict[Any, str],
    size: tuple[int, int],
    ctx: DataContext,
) -> np.ndarray | BadRecord:
    classes = ctx.class_index
    rows = []
    for i, ann in anns:
        where = _where(path, i, ann)
        name = categories.get(ann.get("category_id"))
        if name is None:
            return BadRecord(where, f"category_id {ann.get('category_id')!r} is not in categories")
        if name not in classes:
            return BadRecord(
                where,
                f"category {name!r} is not a class of this federation ({', '.join(ctx.classes)})",
            )
        if ann.get("iscrowd", 0):
            return BadRecord(where, "crowd regions (iscrowd 1) are not supported; give boxes")
        box = coco_box(ann.get("bbox"), size[1], size[0])
        if isinstance(box, str):
            return BadRecord(where, f"{box}; bbox is [x, y, width, height] in pixels")
        rows.append((classes[name], *box))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _record(
    entry: dict[str, Any],
    where: str,
    size: tuple[int, int],
    boxes: np.ndarray,
    seen: set[str],
    ctx: DataContext,
    identify: Identify,
    clips: dict[Path, Any],
) -> Record | BadRecord:
    name = entry["file_name"]
    file = csv_manifest.resolve(ctx.root, name, where)
    if isinstance(file, BadRecord):
        return file
    frame = ""
    if file.suffix.lower() in VIDEO_SUFFIXES:
        t = entry.get("time_s")
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
            return BadRecord(where, "a video frame's entry needs time_s (seconds from the start)")
        problem = _past_the_end(file, round(t * 1000), clips)
        if problem:
            return BadRecord(where, problem)
        frame = frame_name(round(t * 1000))
    elif file.suffix.lower() not in EXTENSIONS:
        return BadRecord(where, f"{name!r} is neither an image nor a video clip")
    key = f"{file}\0{frame}"
    if key in seen:
        return BadRecord(where, f"{name!r} is listed a second time")
    seen.add(key)
    try:
        return identify(file).record(-1, frame, encode(size, boxes))
    except OSError as exc:
        return BadRecord(where, f"cannot read {name!r} ({exc.strerror})")


def _past_the_end(file: Path, t_ms: int, clips: dict[Path, Any]) -> str:
    """Why a frame time is not in the clip (the clip is opened once, for its duration)."""
    from site_kit.data import video

    if file not in clips:
        try:
            clips[file] = video.probe(file)
        except BadRecord as exc:
            clips[file] = exc.why
    clip = clips[file]
    if isinstance(clip, str):
        return clip
    if t_ms > clip.duration_ms + clip.frame_ms:
        return f"time_s {t_ms / 1000:g} is after the clip's end ({clip.duration_ms / 1000:g} s)"
    return ""


def decode(record: Record, ctx: DataContext) -> RawImage:
    file = ctx.root / record.source
    if record.frame:
        from site_kit.data import video

        raw = video.decode(record, ctx)
    else:
        raw = decode_file(file, str(file))
    (h, w), _ = decode_label(record.label)
    if raw.size != (h, w):
        where = str(file) + (f" @ {record.frame}" if record.frame else "")
        raise BadRecord(
            where,
            f"the image is {raw.size[1]}x{raw.size[0]} pixels, the manifest says {w}x{h}",
        )
    return raw
