"""The error-code registry: every code documented, raised only through the registry, produced by a test."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from flsilo.runtime.codes import Code, ExitCode, markdown
from flsilo.runtime.errors import (
    DataError,
    FlsiloError,
    KeyFileError,
    MalformedInputError,
    PolicyError,
    UsageError,
    VerificationError,
    WorkspaceError,
)
from tests.conftest import source_calls

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "docs" / "reference" / "error-codes.md"
PACKAGES = ("flsilo", "site_kit", "hub_kit", "sim_kit")


def test_reference_page_lists_every_code() -> None:
    """docs/reference/error-codes.md is generated from the registry and kept equal to it."""
    assert REFERENCE.read_text(encoding="utf-8") == markdown(), (
        "regenerate it: python -m flsilo.runtime.codes > docs/reference/error-codes.md"
    )
    for code in Code:
        assert f"| `{code.value}` |" in markdown()
        assert code.summary and code.hint, f"{code.value} needs a summary and a hint"


def test_every_exit_status_is_documented() -> None:
    page = (ROOT / "docs" / "reference" / "exit-codes.md").read_text(encoding="utf-8")
    for status in ExitCode:
        assert f"| {int(status)} |" in page, f"exit {int(status)} is not in exit-codes.md"


@pytest.mark.parametrize(
    "cls",
    [
        FlsiloError,
        UsageError,
        VerificationError,
        MalformedInputError,
        DataError,
        KeyFileError,
        WorkspaceError,
        PolicyError,
    ],
)
def test_error_classes_exit_with_their_code_status(cls: type[FlsiloError]) -> None:
    err = cls("what happened", path="f")
    assert err.code is cls.default_code
    assert err.exit_code == err.code.exit
    assert err.to_dict()["code"] == str(err.code)


def test_an_errors_exit_status_and_hint_come_from_its_code() -> None:
    err = MalformedInputError("held", path="x", code=Code.LOCKED)
    assert err.exit_code == ExitCode.ERROR
    assert err.hint == Code.LOCKED.hint == Code.LOCKED.own_hint
    assert MalformedInputError("x", hint="do this").hint == "do this"
    # A code without a hint of its own takes the error class's.
    assert DataError("x", code=Code.SHAPE).hint == DataError.default_hint


def _code_arguments(calls: tuple[ast.Call, ...]) -> list[tuple[int, ast.expr]]:
    found = []
    for node in calls:
        found += [(node.lineno, kw.value) for kw in node.keywords if kw.arg == "code"]
    return found


def test_codes_are_raised_through_the_registry_only() -> None:
    """No raise site spells a code as a bare string: a typo would be a new, undocumented code."""
    offenders = []
    assert {path.split("/")[0] for path in source_calls()} == set(PACKAGES)
    for path, calls in source_calls().items():
        for line, value in _code_arguments(calls):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                offenders.append(f"{path}:{line}: code={value.value!r}")
    assert not offenders, "use a flsilo.runtime.codes.Code member:\n" + "\n".join(offenders)


def test_every_code_is_produced_by_some_test() -> None:
    """Run by .ci/run after both tiers, with FLSILO_TRACE_CODES naming the codes they produced."""
    trace = os.environ.get("FLSILO_TRACE_CODES", "")
    if os.environ.get("FLSILO_CHECK_TRACE") != "1" or not trace:
        pytest.skip("needs the whole suite's trace: .ci/run sets FLSILO_CHECK_TRACE=1")
    produced = set(Path(trace).read_text(encoding="utf-8").split())
    never = sorted(c.value for c in Code if c.value not in produced)
    assert not never, f"codes no test produces (add a test, or drop the code): {never}"
