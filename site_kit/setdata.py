"""``flsilo site set-data``: point a site at its training data, checked and recorded.

The path must exist and its format be one flsilo reads; the change goes into the site's
hash-chained record (old and new path and format), then ``site.toml`` is replaced
atomically, so an auditor of the site can see when its data moved.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from flsilo.fs.atomic import WorkspaceLock, write_text
from flsilo.fs.workspace_paths import stored_path
from flsilo.plans import federation as fed
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError, UsageError
from site_kit import record as site_record
from site_kit.data import FORMATS, guess_format
from site_kit.workspace import SITE_FILE, SiteWorkspace


@dataclass(frozen=True)
class DataChange:
    """What ``site set-data`` changed."""

    site: str
    old_data: str | None
    old_format: str | None
    data: str
    data_format: str | None


def check_data_path(path: Path, data_format: str | None) -> None:
    """Refuse a data path that does not exist, or a format flsilo does not read."""
    if not path.exists():
        raise DataError(
            "data path does not exist",
            path=path,
            code=Code.DATA_MISSING,
            hint="check the path (a folder of class folders, a CSV or an npz file); "
            "set it later with 'flsilo site set-data SITE_DIR PATH'",
        )
    if data_format is not None and data_format not in FORMATS:
        raise UsageError(
            f"unknown data format {data_format!r}",
            path=path,
            code=Code.DATA_FORMAT,
            hint=f"use one of {', '.join(FORMATS)}",
        )
    if data_format is None:
        guess_format(path)  # a usage error naming --data-format when it cannot tell


def set_data(root: Path, data: Path, data_format: str | None) -> DataChange:
    """Point the workspace at ``data`` (checked), record the change, rewrite site.toml."""
    check_data_path(data, data_format)
    SiteWorkspace.open(root)
    with WorkspaceLock(root, "site workspace"):
        ws = SiteWorkspace.open(root)  # read again under the lock
        stored = stored_path(data, root)
        change = DataChange(
            ws.config.site_id, ws.config.data, ws.config.data_format, stored, data_format
        )
        site_record.record(
            root,
            site_record.DataChanged(
                old_data=change.old_data,
                old_format=change.old_format,
                data=change.data,
                data_format=change.data_format,
            ),
        )
        config = replace(ws.config, data=stored, data_format=data_format)
        write_text(root / SITE_FILE, fed.dump_toml(config.__dict__, "flsilo site workspace"))
    return change
