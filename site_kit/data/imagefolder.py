"""``imagefolder``: one sub-folder per class name holding PNG/JPEG files, read with Pillow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError
from site_kit.data import BadRecord, DataContext
from site_kit.data.pillow import EXTENSIONS, decode_file
from site_kit.data.records import Identify, RawImage, Record

KIND = "image"


def check_shape(path: Path, input_shape: tuple[int, ...], what: str = "image data") -> None:
    """Every image format needs a C,H,W input shape with 1 or 3 channels."""
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise DataError(
            f"{what} needs an input shape of 1,H,W or 3,H,W, the federation has "
            f"{','.join(map(str, input_shape))}",
            path=path,
            code=Code.SHAPE,
            hint="use csv or npz data for this federation",
        )


def index(path: Path, ctx: DataContext, identify: Identify) -> Iterator[Record | BadRecord]:
    """Class folders in name order, files in name order within each."""
    ctx.refuse_task(path, "imagefolder")
    check_shape(path, ctx.input_shape)
    if not path.is_dir():
        raise DataError("image folder is not a directory", path=path, code=Code.DATA_MISSING)
    classes = ctx.class_index
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in classes:
            yield BadRecord(
                str(folder),
                f"folder {folder.name!r} is not a class of this federation "
                f"({', '.join(ctx.classes)})",
            )
            continue
        target = classes[folder.name]
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in EXTENSIONS:
                continue
            try:
                yield identify(file).record(target)
            except OSError as exc:
                yield BadRecord(str(file), f"cannot read file ({exc.strerror})")


def decode(record: Record, ctx: DataContext) -> RawImage:
    file = ctx.root / record.source
    return decode_file(file, str(file))
