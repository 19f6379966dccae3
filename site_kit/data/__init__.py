"""Local labeled data as arrays in the federation's input shape and class order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flsilo.codes import Code
from flsilo.errors import DataError, UsageError
from flsilo.federation import DataSpec

FORMATS = ("imagefolder", "csv", "npz")


@dataclass
class Dataset:
    """Features ``x`` (float32, N x input shape) and class indices ``y`` (int64)."""

    x: np.ndarray
    y: np.ndarray
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.x[index], self.y[index])

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.y, minlength=num_classes).tolist()


class BadRecord(Exception):
    """One unusable record; collected with --skip-bad, fatal without it."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


def guess_format(path: Path) -> str:
    if path.is_dir():
        return "imagefolder"
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".npz":
        return "npz"
    raise UsageError(
        f"cannot tell the data format of {path.name}",
        path=path,
        code=Code.DATA_FORMAT,
        hint="pass --data-format imagefolder|csv|npz",
    )


def load_dataset(
    path: Path,
    data_format: str | None,
    classes: tuple[str, ...],
    input_shape: tuple[int, ...],
    spec: DataSpec,
    *,
    skip_bad: bool = False,
) -> Dataset:
    """Read a site's data; every bad record is an error naming it, or skipped and counted."""
    if not path.exists():
        raise DataError(
            "data path does not exist", path=path, code=Code.DATA_MISSING, hint="check --data"
        )
    fmt = data_format or guess_format(path)
    if fmt == "imagefolder":
        from site_kit.data.imagefolder import load
    elif fmt == "csv":
        from site_kit.data.csv_table import load
    elif fmt == "npz":
        from site_kit.data.npz import load
    else:
        raise UsageError(f"unknown data format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    records = load(path, classes, input_shape, spec)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    problems: list[str] = []
    first_bad: BadRecord | None = None
    for item in records:
        if isinstance(item, BadRecord):  # collected, so one run reports every problem
            first_bad = first_bad or item
            problems.append(str(item))
            continue
        x, y = item
        xs.append(x)
        ys.append(y)
    if first_bad is not None and not skip_bad:
        more = f"; {len(problems)} unusable records in all" if len(problems) > 1 else ""
        raise DataError(
            first_bad.why + more,
            path=first_bad.where,
            code=Code.BAD_RECORD,
            hint="fix or remove them ('flsilo site check-data' lists every one), "
            "or pass --skip-bad to skip and count bad records",
        )
    if not ys:
        raise DataError(
            "no usable samples found" + (f" ({len(problems)} skipped)" if problems else ""),
            path=path,
            code=Code.EMPTY_DATA,
            hint=f"expected {fmt} data with classes {', '.join(classes)}",
        )
    x_all = np.stack(xs).astype(np.float32, copy=False).reshape(len(ys), *input_shape)
    return Dataset(x_all, np.asarray(ys, dtype=np.int64), skipped=len(problems), problems=problems)
