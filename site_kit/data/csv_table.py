"""``csv``: a header row, one label column and numeric feature columns named by the federation."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

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
    """Each usable row's record (frame ``row=N``, N its line number) and feature values."""
    spec = ctx.spec
    n_features = math.prod(ctx.input_shape)
    with open_csv(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except (StopIteration, csv.Error, UnicodeDecodeError) as exc:
            raise DataError("CSV has no header row", path=path, code=Code.CSV_HEADER) from exc
        labels = ctx.label_columns()
        check_label_columns(header, ctx, path)
        features = list(spec.feature_columns) or [c for c in header if c not in labels]
        missing = [c for c in features if c not in header]
        if missing:
            raise DataError(
                f"feature column {missing[0]!r} is missing",
                path=path,
                code=Code.CSV_MISSING_COLUMN,
                hint=f"the federation declares columns {', '.join(features)}",
            )
        if len(features) != n_features:
            raise DataError(
                f"{len(features)} feature columns, but the federation's input has {n_features}",
                path=path,
                code=Code.SHAPE,
                hint="declare the feature columns at hub init (--feature-columns)",
            )
        columns = [header.index(c) for c in features]
        label_at = [header.index(c) for c in labels]
        file = identify(path)
        row_no = 1
        try:
            for row in reader:
                row_no += 1
                where = f"{path}:{row_no}"
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    yield BadRecord(where, f"row has {len(row)} cells, header has {len(header)}")
                    continue
                try:
                    target = _target(row, label_at, ctx)
                except LabelError as exc:
                    yield BadRecord(where, str(exc))
                    continue
                try:
                    values = np.array([float(row[i]) for i in columns], dtype=np.float32)
                except ValueError:
                    bad = next(
                        c for c, i in zip(features, columns, strict=True) if not _is_number(row[i])
                    )
                    yield BadRecord(where, f"column {bad!r} is not a number")
                    continue
                if not np.isfinite(values).all():
                    yield BadRecord(where, "a feature is NaN or infinite")
                    continue
                yield file.record(target.index, f"row={row_no}", target.text), values
        except (csv.Error, UnicodeDecodeError) as exc:
            # the reader failed on the line after the last one it returned
            raise DataError(f"row {row_no + 1}: {exc}", path=path, code=Code.CSV_SYNTAX) from exc


def open_csv(path: Path) -> TextIO:
    """The CSV opened for reading; a folder given as the CSV is said as such."""
    try:
        return path.open(newline="", encoding="utf-8-sig")
    except IsADirectoryError as exc:
        raise DataError(
            "this is a folder, not a CSV file",
            path=path,
            hint="give the .csv file itself, or the folder's format with --data-format "
            "(imagefolder for a folder per class)",
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot read CSV ({exc.strerror})", path=path) from exc


def check_label_columns(header: list[str], ctx: DataContext, path: Path) -> None:
    """Refuse a header without one of the task's label columns, showing the header found."""
    for column in ctx.label_columns():
        if column not in header:
            what = "label column" if ctx.is_classify else f"{ctx.task.name} target column"
            fix = (
                f"rename the label column to {column!r}, or ask the hub administrator for a "
                "federation whose 'hub init --label-column' names yours"
                if ctx.is_classify
                else f"the federation's task needs columns {', '.join(ctx.label_columns())}"
            )
            raise DataError(
                f"no {what} {column!r} in the header",
                path=path,
                code=Code.CSV_MISSING_COLUMN,
                hint=header_hint(header, fix),
            )


SEPARATORS = ((";", "';'"), ("\t", "tabs"))


def header_hint(header: list[str], fix: str) -> str:
    """The hint for a header that lacks a column: the header found, and the separator when a
    cell holds one (the file was saved with ';' or tabs, so the header reads as one cell)."""
    shown = ", ".join(header)
    shown = shown if len(shown) <= 300 else shown[:300] + "..."
    for sep, name in SEPARATORS:
        if any(sep in cell for cell in header):
            return (
                f"the header has {shown!r}: it looks separated by {name}, not commas; "
                f"save the file as comma-separated CSV"
            )
    return f"the header has {shown}; {fix}"


def _target(row: list[str], label_at: list[int], ctx: DataContext) -> Target:
    """A row's target: the class of its label cell (classify), or the task's parse."""
    if ctx.is_classify:
        label = row[label_at[0]].strip()
        index = ctx.class_index.get(label)
        if index is None:
            raise LabelError(f"label {label!r} is not a class of this federation")
        return Target(index)
    return ctx.parse([row[i] for i in label_at])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
