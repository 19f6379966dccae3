"""Licence-plate-like crops from two camera setups, for the ``sequence`` task.

Usage: python benchmarks/plates.py OUT [--per-site 3000] [--test 1000] [--seed 0]

Writes, under OUT (created; must not exist or be empty):

- ``site-a/labels.csv`` and ``site-a/images/*.png``: camera setup A, a tight crop of the
  plate (a few pixels of margin, up to 2 degrees of tilt, light blur and sensor noise);
- ``site-b/labels.csv`` and ``site-b/images/*.png``: camera setup B, a wide crop (the
  plate inside 8-20% side and 15-35% top and bottom margins of a darker scene with a
  bumper edge, up to 4 degrees of tilt and some shear, softer, noisier, lit unevenly);
- ``test/labels.csv``: ``--test`` plates per setup (half A, half B; no site holds them);
- ``all.csv``: both sites' rows in one manifest (for ``flsilo simulate --data``).

Every manifest is ``images-csv``: a ``path`` column relative to the CSV and a ``label``
column holding the plate's string. Plates follow a few national-looking patterns (letters
L, digits 9): LL99LLL, LLL999, 999LLL, L999LLL, LL9999 and 99LL99 (6 or 7 characters), drawn from
``CHARSET`` (the 10 digits and the 23 capital letters plates usually use: no I, O or Q).
The font is Aileron Regular, the TrueType font Pillow ships inside the package
(``ImageFont.load_default(size=...)``, Pillow >= 10.1 built with FreeType), so anyone with
the same Pillow renders the same pixels. Crops are stored grey, at each setup's own size
(A: 40 pixels high, B: 64 pixels high around a smaller plate); the federation's plan resizes
them to its input shape. The same ``--seed`` writes the same files.

The federation for them:

    flsilo hub init HUB --task sequence --charset 0123456789ABCDEFGHJKLMNPRSTUVWXYZ \\
        --max-length 8 --model crnn --input-shape 1,32,128 ...
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CHARSET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
DIGITS = "0123456789"
PATTERNS = ("LL99LLL", "LLL999", "999LLL", "L999LLL", "LL9999", "99LL99")
MAX_LENGTH = 8
FONT_SIZE = 44


def plate_text(rng: np.random.Generator) -> str:
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    pools = {"L": LETTERS, "9": DIGITS}
    return "".join(pools[p][int(rng.integers(len(pools[p])))] for p in pattern)


def render_plate(text: str, rng: np.random.Generator) -> Image.Image:
    """The plate face, grey, about 62 x (40 + 30 per character) pixels: border, text."""
    font = ImageFont.load_default(size=FONT_SIZE)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = 14 + int(rng.integers(0, 8)), 10
    width, height = right - left + 2 * pad_x, bottom - top + 2 * pad_y
    background = int(rng.integers(200, 250))
    ink = int(rng.integers(10, 60))
    plate = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(plate)
    draw.rectangle((1, 1, width - 2, height - 2), outline=ink, width=3)
    draw.text((pad_x - left, pad_y - top), text, font=font, fill=ink)
    return plate


def _noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def camera_a(plate: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Setup A: a tight, nearly level crop, sharp, light noise, stored 40 px high."""
    tilted = plate.rotate(
        float(rng.uniform(-2, 2)), resample=Image.Resampling.BILINEAR, expand=True, fillcolor=128
    )
    w, h = tilted.size
    m = lambda: int(rng.integers(0, 5))  # noqa: E731
    crop = tilted.crop((m(), m(), w - m(), h - m()))
    crop = crop.resize((int(40 * crop.width / crop.height), 40), Image.Resampling.BILINEAR)
    crop = crop.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.6))))
    return _noise(crop, float(rng.uniform(2, 6)), rng)


def camera_b(plate: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Setup B: a wide crop around the plate, tilted and sheared, darker, softer, noisier."""
    w, h = plate.size
    shear = float(rng.uniform(-0.12, 0.12))
    plate = plate.transform(
        (w + int(abs(shear) * h), h),
        Image.Transform.AFFINE,
        (1, shear, -abs(shear) * h if shear > 0 else 0, 0, 1, 0),
        resample=Image.Resampling.BILINEAR,
        fillcolor=0,
    )
    mx, my = float(rng.uniform(0.08, 0.2)), float(rng.uniform(0.15, 0.35))
    scene_w, scene_h = int(plate.width * (1 + 2 * mx)), int(plate.height * (1 + 2 * my))
    scene = Image.new("L", (scene_w, scene_h), int(rng.integers(40, 110)))
    draw = ImageDraw.Draw(scene)
    bumper = int(scene_h * rng.uniform(0.6, 0.9))
    draw.rectangle((0, bumper, scene_w, scene_h), fill=int(rng.integers(20, 70)))
    x0 = int((scene_w - plate.width) * rng.uniform(0.3, 0.7))
    y0 = int((scene_h - plate.height) * rng.uniform(0.3, 0.7))
    scene.paste(plate, (x0, y0))
    scene = scene.rotate(
        float(rng.uniform(-4, 4)), resample=Image.Resampling.BILINEAR, fillcolor=60
    )
    light = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0), scene_w)[None, :]
    scene = Image.fromarray((np.asarray(scene, dtype=np.float32) * light).astype(np.uint8))
    crop = scene.resize((int(64 * scene_w / scene_h), 64), Image.Resampling.BILINEAR)
    crop = crop.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.7))))
    return _noise(crop, float(rng.uniform(2, 6)), rng)


CAMERAS = {"a": camera_a, "b": camera_b}


def write_set(folder: Path, rows: list[tuple[str, str]], csv_path: Path) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label"])
        for path, label in rows:
            out.writerow([Path(path).relative_to(folder).as_posix(), label])


def generate(out: Path, per_site: int, test: int, seed: int) -> dict[str, int]:
    """Write every crop and manifest; return how many images each set holds."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty (the generator writes a new folder)")
    rng = np.random.default_rng(seed)
    sets: dict[str, list[tuple[str, str]]] = {"site-a": [], "site-b": [], "test": []}
    plan = [("site-a", "a", per_site), ("site-b", "b", per_site)]
    plan += [("test", "a", test // 2), ("test", "b", test - test // 2)]
    for name, camera, count in plan:
        images = out / name / "images"
        images.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            text = plate_text(rng)
            crop = CAMERAS[camera](render_plate(text, rng), rng)
            path = images / f"{camera}{i:05d}.png"
            crop.save(path, optimize=False)
            sets[name].append((str(path), text))
    for name, rows in sets.items():
        write_set(out / name, rows, out / name / "labels.csv")
    write_set(out, sets["site-a"] + sets["site-b"], out / "all.csv")
    return {name: len(rows) for name, rows in sets.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-site", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = generate(args.out, args.per_site, args.test, args.seed)
    print(", ".join(f"{name}: {n}" for name, n in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
