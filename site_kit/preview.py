"""``site check-data --preview``: a PNG grid of samples as the network will see them.

One row per sample: its caption (class and file), the sample after the plan's
preprocessing, then a few augmented versions of it as training draws them (seeded like
training: from the plan's seed, the record's place in the index and the epoch). Cells show
the input before the normalisation (a per-channel linear map, left out so the picture is
viewable) on the 0-1 scale, enlarged by whole pixels so small inputs stay visible.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from flsilo.fs.atomic import write_bytes
from flsilo.plans.preprocessing import Augment
from site_kit.preprocess import augment_image, sample_rng

CELL = 96
"""Smallest cell edge in pixels: inputs are enlarged by a whole factor to reach it."""
CAPTION = 150
GAP = 4
HEAD = 20
AUGMENTED = 4
"""Augmented versions shown per sample (none when the plan has no augmentation)."""
ROWS = 12
"""Samples in a preview: the first of each class in index order, classes in turn."""


def pick(targets: np.ndarray, rows: int = ROWS) -> list[int]:
    """Positions of the samples to show: classes in turn, each class's first ones first."""
    by_class = [list(np.flatnonzero(targets == c)) for c in np.unique(targets)]
    chosen: list[int] = []
    while len(chosen) < rows and any(by_class):
        for members in by_class:
            if members and len(chosen) < rows:
                chosen.append(int(members.pop(0)))
    return chosen


def cells(x: np.ndarray, augment: Augment, record: int, seed: int) -> list[np.ndarray]:
    """A scaled C x H x W sample, then its augmented versions in epochs 0, 1, ..."""
    out = [x]
    if augment.active:
        out += [augment_image(x, augment, sample_rng(seed, record, e)) for e in range(AUGMENTED)]
    return out


def _image(x: np.ndarray, scale: int) -> Image.Image:
    pixels = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if pixels.shape[0] == 1:
        img = Image.fromarray(pixels[0]).convert("RGB")
    else:
        img = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def render_grid(
    rows: Sequence[tuple[list[np.ndarray], str]], input_shape: tuple[int, ...]
) -> Image.Image:
    """The grid: each row a caption and its cells (see ``cells``)."""
    _, height, width = input_shape
    scale = max(1, -(-CELL // max(height, width)))
    cell_w, cell_h = width * scale, height * scale
    columns = max((len(c) for c, _ in rows), default=1)
    size = (CAPTION + columns * (cell_w + GAP), HEAD + max(1, len(rows)) * (cell_h + GAP))
    grid = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    draw.text((CAPTION, 4), "preprocessed", fill=(0, 0, 0))
    if columns > 1:
        draw.text((CAPTION + cell_w + GAP, 4), "augmented (training only)", fill=(0, 0, 0))
    for row, (row_cells, caption) in enumerate(rows):
        top = HEAD + row * (cell_h + GAP)
        draw.text((4, top + 4), caption[:24], fill=(0, 0, 0))
        for col, x in enumerate(row_cells):
            grid.paste(_image(x, scale), (CAPTION + col * (cell_w + GAP), top))
    return grid


def write_png(path: Path, grid: Image.Image) -> None:
    """Write the grid as PNG, atomically."""
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())
