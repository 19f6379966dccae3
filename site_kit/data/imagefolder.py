"""``imagefolder``: one sub-folder per class name holding PNG/JPEG files, read with Pillow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from flsilo.codes import Code
from flsilo.errors import DataError
from flsilo.federation import DataSpec
from site_kit.data import BadRecord

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load(
    path: Path,
    classes: tuple[str, ...],
    input_shape: tuple[int, ...],
    spec: DataSpec,  # noqa: ARG001 - every loader takes the DataSpec; only CSV needs it
) -> Iterator[tuple[np.ndarray, int] | BadRecord]:
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise DataError(
            f"image folders need an input shape of 1,H,W or 3,H,W, the federation has "
            f"{','.join(map(str, input_shape))}",
            path=path,
            code=Code.SHAPE,
            hint="use csv or npz data for this federation",
        )
    channels, height, width = input_shape
    mode = "L" if channels == 1 else "RGB"
    index = {name: i for i, name in enumerate(classes)}
    if not path.is_dir():
        raise DataError("image folder is not a directory", path=path, code=Code.DATA_MISSING)
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in index:
            yield BadRecord(
                str(folder),
                f"folder {folder.name!r} is not a class of this federation ({', '.join(classes)})",
            )
            continue
        label = index[folder.name]
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in EXTENSIONS:
                continue
            try:
                with Image.open(file) as opened:
                    img = opened.convert(mode)
                if img.size != (width, height):
                    img = img.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                yield BadRecord(str(file), f"cannot decode image ({exc.__class__.__name__})")
                continue
            if channels == 1:
                array = array[None, :, :]
            else:
                array = array.transpose(2, 0, 1)
            yield np.ascontiguousarray(array), label
