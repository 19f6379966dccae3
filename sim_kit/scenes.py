"""Generated scenes for detection: shapes pasted on textured backgrounds, boxes known exactly.

``python -m sim_kit.scenes OUT --images N [--seed S] [--camera NAME] [--size 128] [--coco]``
writes ``OUT/images/NNNNN.png`` and, per image, ``OUT/labels/NNNNN.txt`` in YOLO format
(``class cx cy w h``, normalised; the layout ``--data-format yolo`` reads), and with
``--coco`` also ``OUT/annotations.json`` (a COCO manifest of the same boxes). With
``--video`` it writes instead a clip of N such frames (``OUT/clips/scenes.mp4``, 5 frames a
second, the ``video`` extra) and a COCO manifest labelling each frame by its time. The
classes are ``SHAPES`` in that order.

Each image is a ``size`` x ``size`` RGB frame: a smooth two-colour gradient background with
noise and a few thin distractor lines, and one to ``max_objects`` filled shapes (circle,
square, triangle) of random colour and size, placed so that no two overlap by more than
``MAX_OVERLAP`` of the smaller one's box. A ``camera`` fixes how frames are sampled, the
way two CCTV sites differ: its background tone, its object sizes, its mix of classes and
how crowded its frames are (``CAMERAS``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
MAX_OVERLAP = 0.3


@dataclass(frozen=True)
class Camera:
    """How one site's frames are sampled (see the module docstring)."""

    background: tuple[float, float]
    """Range of the background's mean brightness (0..1)."""
    sizes: tuple[int, int]
    """Range of object sizes in pixels at 128 px (scaled with ``size``)."""
    mix: tuple[float, float, float]
    """Share of each class in ``SHAPES`` order."""
    max_objects: int


CAMERAS = {
    "even": Camera((0.2, 0.8), (14, 40), (1 / 3, 1 / 3, 1 / 3), 4),
    "street": Camera((0.15, 0.5), (12, 30), (0.5, 0.35, 0.15), 5),
    "yard": Camera((0.45, 0.85), (20, 44), (0.15, 0.35, 0.5), 3),
}


def _background(rng: np.random.Generator, size: int, camera: Camera) -> np.ndarray:
    level = rng.uniform(*camera.background)
    a = np.clip(level + rng.uniform(-0.15, 0.15, 3), 0, 1)
    b = np.clip(level + rng.uniform(-0.15, 0.15, 3), 0, 1)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)
    img = a * (1 - t[..., None]) + b * t[..., None]
    img = img + rng.normal(0, 0.04, img.shape)
    return np.asarray(np.clip(img, 0, 1) * 255, dtype=np.uint8)


def _overlaps(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        smaller = min(
            (box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1])
        )
        if iw * ih > MAX_OVERLAP * smaller:
            return True
    return False


def _colour(rng: np.random.Generator, background: float) -> tuple[int, int, int]:
    """A colour that stands apart from the background's brightness."""
    level = rng.uniform(0.0, 0.35) if background > 0.5 else rng.uniform(0.65, 1.0)
    rgb = np.clip(level + rng.uniform(-0.3, 0.3, 3), 0, 1)
    return tuple(int(v * 255) for v in rgb)  # type: ignore[return-value]


def scene(rng: np.random.Generator, size: int, camera: Camera) -> tuple[Image.Image, np.ndarray]:
    """One frame and its boxes: (n, 5) rows of class, x1, y1, x2, y2 in pixels."""
    pixels = _background(rng, size, camera)
    image = Image.fromarray(pixels, mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):  # distractor lines
        xy = [float(v) for v in rng.uniform(0, size, 4)]
        draw.line(xy, fill=_colour(rng, float(pixels.mean()) / 255), width=1)
    placed: list[np.ndarray] = []
    rows: list[list[float]] = []
    scale = size / 128
    for _ in range(int(rng.integers(1, camera.max_objects + 1))):
        cls = int(rng.choice(len(SHAPES), p=np.asarray(camera.mix)))
        for _attempt in range(20):
            s = rng.uniform(*camera.sizes) * scale
            w = s * (rng.uniform(0.8, 1.25) if SHAPES[cls] != "circle" else 1.0)
            h = s
            x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            box = np.array([x1, y1, x1 + w, y1 + h])
            if not _overlaps(box, placed):
                break
        else:
            continue
        placed.append(box)
        local = float(pixels[int(y1) : int(y1 + h), int(x1) : int(x1 + w)].mean()) / 255
        fill = _colour(rng, local)
        if SHAPES[cls] == "circle":
            draw.ellipse([x1, y1, x1 + w, y1 + h], fill=fill)
        elif SHAPES[cls] == "square":
            draw.rectangle([x1, y1, x1 + w, y1 + h], fill=fill)
        else:
            draw.polygon([(x1 + w / 2, y1), (x1 + w, y1 + h), (x1, y1 + h)], fill=fill)
        rows.append([cls, *box.tolist()])
    return image, np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def yolo_lines(boxes: np.ndarray, size: int) -> str:
    """``class cx cy w h`` lines, normalised, six decimals."""
    lines = []
    for cls, x1, y1, x2, y2 in boxes.tolist():
        cx, cy, w, h = (
            (x1 + x2) / 2 / size,
            (y1 + y2) / 2 / size,
            (x2 - x1) / size,
            (y2 - y1) / size,
        )
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "".join(line + "\n" for line in lines)


def write_scenes(
    out: Path, images: int, *, seed: int = 0, camera: str = "even", size: int = 128,
    coco: bool = False, start: int = 0,
) -> Path:  # fmt: skip
    """Write ``images`` frames (numbered from ``start``) and their labels under ``out``."""
    rng = np.random.default_rng([seed, start])
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for i in range(start, start + images):
        image, boxes = scene(rng, size, CAMERAS[camera])
        name = f"{i:05d}"
        image.save(out / "images" / f"{name}.png")
        (out / "labels" / f"{name}.txt").write_text(yolo_lines(boxes, size))
        entries.append(
            {"id": i + 1, "file_name": f"images/{name}.png", "width": size, "height": size}
        )
        for cls, x1, y1, x2, y2 in boxes.tolist():
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "area": round((x2 - x1) * (y2 - y1), 3), "iscrowd": 0,
            })  # fmt: skip
    if coco:
        categories = [{"id": c + 1, "name": n} for c, n in enumerate(SHAPES)]
        document = {"images": entries, "annotations": annotations, "categories": categories}
        (out / "annotations.json").write_text(json.dumps(document, indent=1) + "\n")
    return out


def write_scene_clip(
    out: Path, frames: int, *, seed: int = 0, camera: str = "even", size: int = 128, fps: int = 5
) -> Path:
    """A clip ``out/clips/scenes.mp4`` of ``frames`` scenes and ``out/annotations.json``, a
    COCO manifest labelling each frame by its time (``time_s``); needs PyAV (``video``)."""
    import av

    rng = np.random.default_rng([seed, 7])
    clip = out / "clips" / "scenes.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    with av.open(str(clip), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.codec_context.bit_rate = 4_000_000
        stream.codec_context.time_base = Fraction(1, fps)
        for n in range(frames):
            image, boxes = scene(rng, size, CAMERAS[camera])
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            time_s = round(n / fps + 0.5 / fps, 3)  # mid-frame: the nearest frame is n
            entries.append({"id": n + 1, "file_name": "clips/scenes.mp4", "time_s": time_s,
                            "width": size, "height": size})  # fmt: skip
            for cls, x1, y1, x2, y2 in boxes.tolist():
                annotations.append({
                    "id": len(annotations) + 1, "image_id": n + 1, "category_id": int(cls) + 1,
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                })  # fmt: skip
        for packet in stream.encode():
            container.mux(packet)
    categories = [{"id": c + 1, "name": n} for c, n in enumerate(SHAPES)]
    document = {"images": entries, "annotations": annotations, "categories": categories}
    (out / "annotations.json").write_text(json.dumps(document, indent=1) + "\n")
    return out / "annotations.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sim_kit.scenes", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--camera", choices=sorted(CAMERAS), default="even")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--coco", action="store_true", help="also write annotations.json")
    parser.add_argument("--video", action="store_true", help="one clip of N frames instead")
    args = parser.parse_args(argv)
    if args.video:
        write_scene_clip(args.out, args.images, seed=args.seed, camera=args.camera, size=args.size)
    else:
        write_scenes(
            args.out,
            args.images,
            seed=args.seed,
            camera=args.camera,
            size=args.size,
            coco=args.coco,
        )
    print(args.out)


if __name__ == "__main__":
    main()
