"""``npz``: arrays ``x`` (N x input shape, or N x features) and ``y`` (indices or class names)."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError
from flsilo.tasks import LabelError, Target
from site_kit.data import BadRecord, DataContext
from site_kit.data.records import Identify, Record

KIND = "table"


def rows(
    path: Path, ctx: DataContext, identify: Identify
) -> Iterator[tuple[Record, np.ndarray] | BadRecord]:
    """Each usable row's record (frame ``row=N``, N from 0) and its values."""
    input_shape = ctx.input_shape
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz or "y" not in npz:
                raise DataError(
                    f"needs arrays 'x' and 'y', found {', '.join(npz.files) or 'none'}",
                    path=path,
                    code=Code.NPZ_ARRAYS,
                    hint="save with numpy.savez(path, x=features, y=labels)",
                )
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read npz ({exc})",
            path=path,
            code=Code.NPZ_READ,
            hint="object arrays are refused (no pickle); store numbers and strings only",
        ) from exc
    if y.ndim not in ((1,) if ctx.is_classify else (1, 2)) or x.shape[0] != y.shape[0]:
        raise DataError(
            f"x has {x.shape[0] if x.ndim else 0} rows and y has shape {y.shape}",
            path=path,
            code=Code.SHAPE,
            hint="y must be one label per row of x",
        )
    if x.shape[1:] != tuple(input_shape) and math.prod(x.shape[1:]) != math.prod(input_shape):
        raise DataError(
            f"x rows have shape {x.shape[1:]}, the federation's input is {tuple(input_shape)}",
            path=path,
            code=Code.SHAPE,
        )
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"x has non-numeric dtype {x.dtype}", path=path, code=Code.NPZ_DTYPE)
    file = identify(path)
    for row, (features, label) in enumerate(zip(x, y, strict=True)):
        where = f"{path}[{row}]"
        try:
            target = _target(label, y.dtype, ctx)
        except LabelError as exc:
            yield BadRecord(where, str(exc))
            continue
        values = np.asarray(features, dtype=np.float32).reshape(input_shape)
        if not np.isfinite(values).all():
            yield BadRecord(where, "a feature is NaN or infinite")
            continue
        yield file.record(target.index, f"row={row}", target.text), values


def _target(label: np.ndarray, dtype: np.dtype, ctx: DataContext) -> Target:
    """A row of ``y`` as a target: a class index or name (classify), else the task's parse
    of its cells (a row of 0/1 per finding, a string)."""
    if not ctx.is_classify:
        cells = [str(int(v)) if dtype.kind in "iub" else str(v) for v in np.atleast_1d(label)]
        return ctx.parse(cells)
    classes = ctx.classes
    if dtype.kind in "iu":
        if not 0 <= int(label) < len(classes):
            raise LabelError(f"label index {int(label)} is outside 0..{len(classes) - 1}")
        return Target(int(label))
    index = ctx.class_index.get(str(label))
    if index is None:
        raise LabelError(f"label {str(label)!r} is not a class of this federation")
    return Target(index)
