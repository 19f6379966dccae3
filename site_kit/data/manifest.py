"""CSV manifests of files for the file formats (dicom, video): rows by column name, safe paths.

A manifest names its files relative to the CSV's own folder, so the folder moves as one
piece. A row whose path is empty, absolute or leaves that folder (``..``) is a bad record
naming its row; a missing header or column, or a row the CSV reader cannot parse, is an
error about the whole manifest.
"""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Iterator
from pathlib import Path

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError
from site_kit.data import BadRecord


def check_source(path: Path, fmt: str, hint: str) -> None:
    """A file format's data is a folder per class or a ``.csv`` manifest, nothing else."""
    if not path.is_dir() and path.suffix.lower() != ".csv":
        raise DataError(
            f"{fmt} data is a folder holding a folder per class, or a CSV manifest "
            f"(this is a {path.suffix or 'suffix-less'} file)",
            path=path,
            code=Code.DATA_FORMAT,
            hint=hint,
        )


def rows(path: Path, columns: tuple[str, ...], hint: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``(where, row)`` per non-blank row, ``row`` holding the named columns' stripped cells.

    ``where`` is ``CSV:LINE`` for messages. A row with another number of cells than the
    header is yielded with an empty dict (the caller reports it as a bad record).
    """
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(
            f"cannot read CSV ({exc.strerror})", path=path, code=Code.DATA_MISSING
        ) from exc
    with fh:
        reader = csv.reader(fh)
        try:
            header = [cell.strip() for cell in next(reader)]
        except (StopIteration, csv.Error, UnicodeDecodeError) as exc:
            raise DataError(
                "CSV has no header row", path=path, code=Code.CSV_HEADER, hint=hint
            ) from exc
        for column in columns:
            if column not in header:
                raise DataError(
                    f"no {column!r} column in the header ({', '.join(header)})",
                    path=path,
                    code=Code.CSV_MISSING_COLUMN,
                    hint=hint,
                )
        at = {column: header.index(column) for column in columns}
        line = 1
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    yield f"{path}:{line}", {}
                    continue
                yield f"{path}:{line}", {c: row[i].strip() for c, i in at.items()}
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(
                f"line {line + 1}: {exc}", path=path, code=Code.CSV_SYNTAX, hint=hint
            ) from exc


def resolve(root: Path, name: str, where: str) -> Path | BadRecord:
    """The file a manifest row names, inside ``root``, or the bad record it makes."""
    relative = posixpath.normpath(name.replace("\\", "/")) if name else ""
    if not relative or relative == ".":
        return BadRecord(where, "the file's cell is empty")
    if relative.startswith("/") or Path(name).is_absolute() or relative.split("/")[0] == "..":
        return BadRecord(where, f"{name!r} leaves the CSV's folder (paths are relative to it)")
    file = root / relative
    if not file.is_file():
        return BadRecord(where, f"file {name!r} does not exist (beside the CSV: {file})")
    return file
