"""``images-csv``: a CSV manifest with a ``path`` column (relative to the CSV) and a ``label``.

Hospitals keep labels in spreadsheets, not folder names. Records come in the CSV's row
order; a row whose file is missing, whose label is not a class, whose path is absolute or
leaves the CSV's folder (``..``), or that lists a file a second time is a bad record
naming its row.
"""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Iterator
from pathlib import Path

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError
from flsilo.tasks import LabelError
from site_kit.data import BadRecord, DataContext
from site_kit.data.csv_table import check_label_columns, header_hint, open_csv
from site_kit.data.imagefolder import check_shape
from site_kit.data.pillow import EXTENSIONS, decode_file
from site_kit.data.records import Identify, RawImage, Record

KIND = "image"
PATH_COLUMN = "path"
LABEL_COLUMN = "label"


def index(path: Path, ctx: DataContext, identify: Identify) -> Iterator[Record | BadRecord]:
    check_shape(path, ctx.input_shape)
    with open_csv(path) as fh:
        reader = csv.reader(fh)
        try:
            header = [cell.strip() for cell in next(reader)]
        except (StopIteration, csv.Error, UnicodeDecodeError) as exc:
            raise DataError("CSV has no header row", path=path, code=Code.CSV_HEADER) from exc
        for column in (PATH_COLUMN, LABEL_COLUMN) if ctx.is_classify else (PATH_COLUMN,):
            if column not in header:
                raise DataError(
                    f"no {column!r} column in the header",
                    path=path,
                    code=Code.CSV_MISSING_COLUMN,
                    hint=header_hint(
                        header,
                        "an image manifest has a 'path' column (relative to the CSV) and a "
                        "'label' column",
                    ),
                )
        if not ctx.is_classify:
            check_label_columns(header, ctx, path)
        columns = (LABEL_COLUMN,) if ctx.is_classify else ctx.label_columns()
        path_at = header.index(PATH_COLUMN)
        label_at = [header.index(c) for c in columns]
        seen: dict[str, int] = {}
        row_no = 1
        try:
            for row in reader:
                row_no += 1
                if not row or all(not cell.strip() for cell in row):
                    continue
                where = f"{path}:{row_no}"
                if len(row) != len(header):
                    yield BadRecord(where, f"row has {len(row)} cells, header has {len(header)}")
                    continue
                yield _record(row[path_at].strip(), [row[i] for i in label_at], where, row_no,
                              seen, ctx, identify)  # fmt: skip
        except (csv.Error, UnicodeDecodeError) as exc:
            # the reader failed on the line after the last one it returned
            raise DataError(f"row {row_no + 1}: {exc}", path=path, code=Code.CSV_SYNTAX) from exc


def _record(
    name: str,
    cells: list[str],
    where: str,
    row_no: int,
    seen: dict[str, int],
    ctx: DataContext,
    identify: Identify,
) -> Record | BadRecord:
    try:
        target = ctx.parse(cells)
    except LabelError as exc:
        return BadRecord(where, str(exc))
    relative = posixpath.normpath(name.replace("\\", "/")) if name else ""
    if not relative or relative == ".":
        return BadRecord(where, "the path cell is empty")
    if relative.startswith("/") or Path(name).is_absolute() or relative.split("/")[0] == "..":
        return BadRecord(
            where, f"path {name!r} leaves the CSV's folder (paths are relative to the CSV)"
        )
    if Path(relative).suffix.lower() not in EXTENSIONS:
        return BadRecord(where, f"{name!r} is not an image file ({', '.join(sorted(EXTENSIONS))})")
    if relative in seen:
        return BadRecord(where, f"{name!r} is listed a second time (first on row {seen[relative]})")
    seen[relative] = row_no
    file = ctx.root / relative
    try:
        return identify(file).record(target.index, label=target.text)
    except FileNotFoundError:
        return BadRecord(where, f"file {name!r} does not exist (beside the CSV: {file})")
    except OSError as exc:
        return BadRecord(where, f"cannot read {name!r} ({exc.strerror})")


def decode(record: Record, ctx: DataContext) -> RawImage:
    file = ctx.root / record.source
    return decode_file(file, str(file))
