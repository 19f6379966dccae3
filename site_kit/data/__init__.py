"""A site's labeled data: the format registry, and what every adapter is handed.

Each format is a module in ``FORMATS`` (name -> module). An image adapter module defines

- ``KIND = "image"``;
- ``index(path, ctx, identify) -> Iterator[Record | BadRecord]``: walk the data once, in a
  fixed order, yielding one small ``Record`` per sample (``identify(file)`` gives a file's
  path relative to ``ctx.root``, size, mtime and sha256, re-hashed only when the file
  changed since the last index) or a ``BadRecord`` for what cannot be a sample (unknown
  class, missing file); a problem with the whole source (not a folder, no header) raises
  ``DataError``;
- ``decode(record, ctx) -> RawImage``: the pixels of one record as the file holds them
  (never resized, scaled or normalised: ``site_kit.preprocess`` does that, per the plan),
  or raise ``BadRecord``. The index decodes every new or changed record once, so a file
  that cannot be decoded is a bad record before training starts; a module that sets
  ``CHECK_ON_INDEX = False`` (decoding everything would take too long) is trusted to find
  its bad records in ``index``.

A table adapter module (``KIND = "table"``, small enough to stay in memory) defines
``rows(path, ctx, identify) -> Iterator[tuple[Record, np.ndarray] | BadRecord]``: each
usable row's record (frame ``row=N``) and its raw feature values.

To add a format: write the module, add one line to ``FORMATS`` (and to ``GUESS`` if a file
suffix identifies it), and name it in docs/reference/data-formats.md.
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from flsilo.plans.federation import DataSpec
from flsilo.plans.plan import CLASSIFY, TaskSpec
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError, UsageError
from flsilo.tasks import Target, load_task

FORMATS: dict[str, str] = {
    "imagefolder": "site_kit.data.imagefolder",
    "images-csv": "site_kit.data.images_csv",
    "csv": "site_kit.data.csv_table",
    "npz": "site_kit.data.npz",
    "dicom": "site_kit.data.dicom",
    "video": "site_kit.data.video",
    "yolo": "site_kit.data.yolo",
    "coco": "site_kit.data.coco",
}
"""Every data format a site reads: its ``--data-format`` name and the module that reads it."""

GUESS: dict[str, str] = {".npz": "npz", ".dcm": "dicom", ".json": "coco"}
"""File suffixes that name a format when ``--data-format`` is left out (see guess_format)."""


@dataclass
class Dataset:
    """Features ``x`` (float32, N x input shape) and class indices ``y`` (int64), in memory.

    What simulations and small tables use; a site's image data streams instead
    (``site_kit.data.samples``).
    """

    x: np.ndarray
    y: np.ndarray
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    task: TaskSpec = field(default_factory=TaskSpec)
    """What ``y`` holds: class indices (classify), or each sample's decoded target."""

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.x[index], self.y[index], task=self.task)

    def class_counts(self, num_classes: int) -> list[int]:
        if self.task.name == CLASSIFY:
            return np.bincount(self.y, minlength=num_classes).tolist()
        names = tuple(str(i) for i in range(num_classes))
        return load_task(self.task.name).counts(self.y, names)

    def sample(self, i: int) -> np.ndarray:
        return self.x[i]


class BadRecord(Exception):
    """One unusable record; collected with --skip-bad, fatal without it.

    ``where`` names it for people (a file, ``file.csv:12``); ``source``, ``size`` and
    ``mtime_ns`` identify the file when the problem lies in its bytes, so a refreshed index
    keeps the verdict until the file changes.
    """

    def __init__(
        self, where: str, why: str, *, source: str = "", size: int = -1, mtime_ns: int = -1
    ) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why
        self.source = source
        self.size = size
        self.mtime_ns = mtime_ns


@dataclass(frozen=True)
class DataContext:
    """What an adapter reads data against: where, and the federation's classes and shapes.

    ``root`` is the folder that records' sources are relative to (the data folder, or the
    folder holding a CSV manifest or table); ``preprocess`` is the plan's preprocessing
    settings where an adapter needs them (a video's frame rate), else None.
    """

    root: Path
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    spec: DataSpec = field(default_factory=DataSpec)
    preprocess: Any = None
    task: TaskSpec = field(default_factory=TaskSpec)

    @property
    def class_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def is_classify(self) -> bool:
        return self.task.name == CLASSIFY

    def label_columns(self) -> tuple[str, ...]:
        """The CSV columns holding a row's target (classify: the federation's label column)."""
        if self.is_classify:
            return (self.spec.label_column,)
        return load_task(self.task.name).label_columns(self.task, self.classes)

    def parse(self, cells: Sequence[str]) -> Target:
        """A row's target from its label cells (``LabelError`` when they are not one)."""
        return load_task(self.task.name).parse(cells, self.task, self.classes)

    def refuse_format(self, path: Path, fmt: str) -> None:
        """The task's targets must be ones the format can carry (``Task.formats``)."""
        formats = load_task(self.task.name).formats
        if fmt not in formats:
            raise DataError(
                f"{fmt} data cannot carry the targets of task {self.task.name}",
                path=path,
                code=Code.DATA_FORMAT,
                hint=f"give this federation's data as --data-format {' or '.join(formats)}",
            )

    def refuse_task(self, path: Path, fmt: str) -> None:
        """Formats that name a class by folder carry class targets only: classify's, or a
        plug-in's that lists the format (one built on classify inherits its formats)."""
        if not self.is_classify and fmt not in load_task(self.task.name).formats:
            raise DataError(
                f"the {fmt} format holds one class per sample, not {self.task.name} targets",
                path=path,
                code=Code.DATA_FORMAT,
                hint="give the targets in a CSV manifest (--data-format images-csv) or a table",
            )


def data_root(path: Path) -> Path:
    """The folder records' sources are relative to: the path itself, or a file's folder."""
    return path if path.is_dir() else path.parent


EXTRAS: dict[str, str] = {"dicom": "dicom", "video": "video"}
"""Formats whose reader needs an optional extra (``pip install 'flsilo[EXTRA]'``)."""


def adapter(name: str) -> ModuleType:
    """The module that reads format ``name`` (a usage error naming the formats if unknown)."""
    module = FORMATS.get(name)
    if module is None:
        raise UsageError(
            f"unknown data format {name!r}",
            code=Code.DATA_FORMAT,
            hint=f"use one of {', '.join(FORMATS)}",
        )
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # the reader, or a package it needs, is not installed here
        extra = EXTRAS.get(name)
        raise UsageError(
            f"data format {name!r} cannot be read by this installation "
            f"({exc.name or 'a module'} is missing)",
            code=Code.DATA_FORMAT,
            hint=f"install flsilo with its '{extra}' extra (pip install 'flsilo[{extra}]')"
            if extra
            else "reinstall flsilo",
        ) from exc


def guess_format(path: Path, input_shape: tuple[int, ...] = (), preprocess: Any = None) -> str:
    """The format of ``path`` when --data-format is left out.

    A folder is an image folder (``yolo`` if it holds ``images/`` and ``labels/``); a
    ``.csv`` whose header has a ``path`` column is an image manifest (``images-csv``) for a
    federation of images, one with ``file``, ``start_s`` and ``end_s`` columns a video
    manifest, else a table. Where the plan's ``preprocess`` reads DICOM intensities, a
    folder or an image manifest is ``dicom``.
    """
    dicom = getattr(preprocess, "intensity", "") == "dicom"
    if path.is_dir():
        if (path / "images").is_dir() and (path / "labels").is_dir():
            return "yolo"
        return "dicom" if dicom else "imagefolder"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header = _header(path) if len(input_shape) == 3 else set()
        if "path" in header:
            return "dicom" if dicom else "images-csv"
        return "video" if {"file", "start_s", "end_s"} <= header else "csv"
    if suffix in GUESS:
        return GUESS[suffix]
    raise UsageError(
        f"cannot tell the data format of {path.name}",
        path=path,
        code=Code.DATA_FORMAT,
        hint=f"pass --data-format {'|'.join(FORMATS)}",
    )


def _header(path: Path) -> set[str]:
    """The column names of a CSV's first line (none when it cannot be read)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, csv.Error, UnicodeDecodeError):
        return set()
    return {cell.strip() for cell in header}


def check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(
            "data path does not exist", path=path, code=Code.DATA_MISSING, hint="check --data"
        )


def refuse_bad(problems: list[BadRecord], skip_bad: bool) -> None:
    """Without --skip-bad, the first bad record is an error (counting the others)."""
    if problems and not skip_bad:
        first = problems[0]
        more = f"; {len(problems)} unusable records in all" if len(problems) > 1 else ""
        raise DataError(
            first.why + more,
            path=first.where,
            code=Code.BAD_RECORD,
            hint="fix or remove them ('flsilo site check-data' lists every one), "
            "or pass --skip-bad to skip and count bad records",
        )


def refuse_empty(
    count: int, bad: Sequence[BadRecord], path: Path, fmt: str, classes: tuple[str, ...]
) -> None:
    """No usable sample at all: the error names the first unusable record and why."""
    if count == 0:
        first = f"; the first: {bad[0]}" if bad else ""
        raise DataError(
            "no usable samples found" + (f" ({len(bad)} skipped{first})" if bad else ""),
            path=path,
            code=Code.EMPTY_DATA,
            hint=f"expected {fmt} data with classes {', '.join(classes)}"
            + ("; if it is another format, pass --data-format" if bad else ""),
        )
