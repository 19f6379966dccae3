"""tests/cpu_report.py: the tier's CPU line counts pytest and its children, nothing before."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BURN = [sys.executable, "-c", "sum(range(40_000_000))"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_a_shell_that_execs_pytest_after_other_work_does_not_count_that_work() -> None:
    """``sh -c 'pip install ... && python -m pytest'`` may run pytest in the shell's own
    process, whose earlier children (pip) the kernel then counts as pytest's."""
    before = _children_cpu()
    subprocess.run(BURN, check=True)
    burn = _children_cpu() - before
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "tests/unit/test_weighting.py"]  # fmt: skip
    script = " ".join(BURN[:2]) + ' "sum(range(40_000_000))" && exec ' + " ".join(pytest_cmd)
    before = _children_cpu()
    done = subprocess.run(["sh", "-c", script], cwd=ROOT, capture_output=True, text=True)
    total = _children_cpu() - before
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"CPU time ([\d.]+) s", done.stdout)
    assert found, done.stdout
    assert float(found.group(1)) < total - burn / 2  # pytest's own, not the burn before it
