"""Every report reads at an 80-column terminal and through a pipe: no line wider than the
terminal, and no file name broken across lines (issue 13 item 6)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from flsilo.cli.app import run
from tests.conftest import Federation

WIDTH = 80


@contextlib.contextmanager
def _at(cwd: Path, columns: str | None) -> Iterator[None]:
    before_cwd, before_cols = Path.cwd(), os.environ.get("COLUMNS")
    os.chdir(cwd)
    if columns is None:
        os.environ.pop("COLUMNS", None)
    else:
        os.environ["COLUMNS"] = columns
    try:
        yield
    finally:
        os.chdir(before_cwd)
        if before_cols is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before_cols


def _run(cwd: Path, *args: str, columns: str | None = str(WIDTH)) -> tuple[int, str]:
    """flsilo ARGS with stdout and stderr piped (not a terminal), both texts together."""
    out, err = io.StringIO(), io.StringIO()
    with _at(cwd, columns), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(args))
    return code, out.getvalue() + err.getvalue()


# name -> (arguments, file names that must appear whole on one line)
BEFORE_AGGREGATE = {
    "hub status --inbox": (
        ("hub", "status", "hub", "--inbox", "hub/inbox"),
        ("site-a", "site-b", "site-x (r0000-site-x): file is 12 bytes"),
    ),
    "aggregate --dry-run": (("aggregate", "hub", "--dry-run"), ("r0000-site-x",)),
}
AGGREGATE = {"aggregate": (("aggregate", "hub"), ("hub/packages/fed-r0001.safetensors",))}
AFTER_AGGREGATE = {
    "verify": (
        (
            "verify",
            "hub/rounds/0000/fed-r0000-site-a.safetensors",
            "hub/rounds/0000/fed-r0000-site-b.safetensors",
            "hub/packages/fed-r0001.safetensors",
            "site-a/outbox/fed-r0000-site-a.safetensors",
            "--signers",
            "hub/allowed_signers",
        ),
        ("fed-r0000-site-a.safetensors", "fed-r0000-site-b.safetensors", "fed-r0001.safetensors"),
    ),
    "verify, a failure": (
        ("verify", "hub/packages/fed-r0001.safetensors", "--key", "keys/site-a.pub"),
        ("fed-r0001.safetensors",),
    ),
    "inspect a package": (
        ("inspect", "hub/packages/fed-r0001.safetensors"),
        ("fed-r0001.safetensors",),
    ),
    "inspect a bundle": (
        ("inspect", "hub/rounds/0000/fed-r0000-site-a.safetensors"),
        ("fed-r0000-site-a.safetensors",),
    ),
    "hub status": (("hub", "status", "hub"), ("hub/packages/fed-r0001.safetensors",)),
    "hub history": (("hub", "history", "hub"), ()),
    "site status": (
        ("site", "status", "site-a"),
        ("fed-r0000.safetensors", "site-a/outbox/fed-r0000-site-a.safetensors"),
    ),
    "audit": (("audit", "hub", "--hub-key", "keys/hub.pub"), ()),
    "audit --replay": (("audit", "hub", "--hub-key", "keys/hub.pub", "--replay"), ()),
}


@pytest.fixture(scope="module")
def outputs(federation_template: Federation, tmp_path_factory: pytest.TempPathFactory):
    """Each report once, from one federation: a stick with two good bundles and a damaged
    one, the round aggregated, then every read-only report."""
    fed = federation_template.copy(tmp_path_factory.mktemp("narrow") / "fed")
    fed.carry()
    stray = fed.hub / "inbox" / "fed-r0000-site-x.safetensors"
    stray.write_bytes(b"not a bundle")
    shutil.copy(f"{fed.bundles['site-a']}.sig", f"{stray}.sig")
    results = {}
    for table in (BEFORE_AGGREGATE, AGGREGATE, AFTER_AGGREGATE):
        for name, (args, names) in table.items():
            results[name] = (*_run(fed.root, *args), names)
    stray.unlink()
    Path(f"{stray}.sig").unlink()
    results["piped, no COLUMNS"] = (
        *_run(fed.root, "audit", "hub", "--hub-key", "keys/hub.pub", columns=None),
        (),
    )
    return results


CASES = [*BEFORE_AGGREGATE, *AGGREGATE, *AFTER_AGGREGATE, "piped, no COLUMNS"]


@pytest.mark.parametrize("name", CASES)
def test_reports_fit_80_columns_and_keep_file_names_whole(outputs, name: str) -> None:
    code, text, names = outputs[name]
    assert "Traceback" not in text and "internal error" not in text, text
    wide = [line for line in text.splitlines() if len(line) > WIDTH and not _error_line(line)]
    assert not wide, "\n" + text
    for file_name in names:
        assert any(file_name in line for line in text.splitlines()), (file_name, text)
    assert code in (0, 3), text  # 3: the stray file on the stick, the failed verify


def _error_line(line: str) -> bool:
    """Error lines stay one line whatever the width: one line per error, for grep and logs."""
    return line.startswith("flsilo: error[")


@pytest.mark.slow
def test_demo_table_fits_80_columns_and_groups_rows_by_trips(tmp_path: Path) -> None:
    args = ("--rounds", "2", "--local-epochs", "1", "--sites", "2", "--max-per-site", "40")
    code, text = _run(tmp_path, "demo", "--out", "demo", *args, "--model", "logreg")
    assert code == 0, text
    assert not [line for line in text.splitlines() if len(line) > WIDTH], "\n" + text
    lines = text.splitlines()
    title = next(i for i, line in enumerate(lines) if "held-out test accuracy" in line)
    assert "by trips" in lines[title]  # the title speaks for every row, not the last one
    group = {}
    for line in lines[title:]:
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 5 and cells[2] and cells[2] != "model":
            group[cells[2]] = cells[1] or group.get("last", "")
            group["last"] = group[cells[2]]
    central = next(k for k in group if k.startswith("centralized"))
    assert group["site-a alone"] == group[central] == "no trip"
    assert group["one-shot averaging"] == group["Fisher merging"] == "1 trip"
    assert group["periodic FedAvg (the final package)"] == "2 trips,"
    assert "  flsilo inspect demo/hub/packages/digits-demo-r0002.safetensors" in lines
