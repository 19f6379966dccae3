"""Refactors keep the bytes: a round aggregated from the golden fixture writes exactly the
files (packages, signatures, server state, archives, event log) recorded from the code
before, and the in-memory path computes exactly the recorded models.

The fixture (``tests/fixtures/golden_round``: a hub at round 0, its keys, three trained
bundles) and ``expected.json`` were made with ``make.py`` there. A change that is meant to
change these bytes (a new format version) regenerates them and says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flsilo.cli.app import run
from flsilo.format import manifest as mf

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "golden_round"
EXPECTED = FIXTURE / "expected.json"
EPOCH = "1790000000"
PINNED_SOFTWARE = {"flsilo": "golden", "python": "3"}

SCENARIOS: dict[str, list[str]] = {
    "fedavg": [],
    "median-capped": ["--strategy", "median", "--max-weight-share", "0.4"],
    "geomedian-gate-fedadam": (
        "--strategy geomedian --norm-gate 1.05 --min-sites 2 --server-optimizer fedadam".split()
    ),
    "krum-fedavgm": ["--strategy", "multi-krum:0,2", "--server-optimizer", "fedavgm"],
}
IN_MEMORY: dict[str, tuple[str, str | None]] = {
    "fedavg": ("fedavg", None),
    "trimmed": ("trimmed-mean:0.2", None),
    "krum": ("multi-krum:0,2", None),
    "geomedian-fedadam": ("geomedian", "fedadam"),
}


def _pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creation times and the interpreter's version are the only inputs that vary by run."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    monkeypatch.setattr(mf, "software_versions", lambda extra=None: PINNED_SOFTWARE | (extra or {}))


def _tree(root: Path) -> dict[str, str]:
    """Every file's sha256 (the lock holds a process id; a quarantine note names a path)."""
    where = str(root.parent).encode()
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes().replace(where, b"TMP")).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _aggregate(tmp: Path, args: list[str]) -> tuple[int, dict[str, str]]:
    hub = tmp / "hub"
    shutil.copytree(FIXTURE / "hub", hub)
    inbox = tmp / "inbox"
    shutil.copytree(FIXTURE / "bundles", inbox)
    for folder in ("inbox", "quarantine", "rounds", "packages"):
        (hub / folder).mkdir(exist_ok=True)  # git keeps no empty folders
    code = run(
        ["aggregate", str(hub), "--inbox", str(inbox), "--key", str(FIXTURE / "keys/hub"), *args]
    )
    return code, _tree(hub)


def _read(path: Path) -> dict[str, np.ndarray]:
    from flsilo.format.artifact import scan_file

    scan = scan_file(path, data_digest=False)
    data = path.read_bytes()[scan.header.data_start :]
    return {
        t.name: np.frombuffer(data[t.begin : t.end], dtype=np.float32).reshape(t.shape).copy()
        for t in scan.header.tensors
    }


def _in_memory(name: str) -> str:
    from hub_kit.inmemory import aggregate_in_memory
    from hub_kit.server_optimizers import ServerOptimizer
    from hub_kit.strategies import parse_strategy

    strategy, server = IN_MEMORY[name]
    base = _read(FIXTURE / "hub" / "packages" / "fed-r0000.safetensors")
    sites = [_read(p) for p in sorted((FIXTURE / "bundles").glob("*.safetensors"))]
    weights = [150.0, 200.0, 250.0]
    opt = ServerOptimizer(name=server) if server else None
    digest = hashlib.sha256()
    state = None
    for _ in range(2):  # a second round reads the state the first returned
        out = aggregate_in_memory(
            base, sites, weights, parse_strategy(strategy), server=opt, server_state=state
        )
        for key in sorted(out.arrays):
            digest.update(out.arrays[key].tobytes())
        state = out.server_state
        digest.update(state or b"")
        base = out.arrays
    return digest.hexdigest()


def _expected() -> dict[str, Any]:
    return json.loads(EXPECTED.read_text())


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_round_writes_the_recorded_bytes(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pin(monkeypatch)
    code, tree = _aggregate(tmp_path, SCENARIOS[scenario])
    assert code == 0
    assert tree == _expected()["aggregate"][scenario]


@pytest.mark.parametrize("name", sorted(IN_MEMORY))
def test_the_in_memory_path_computes_the_recorded_models(name: str) -> None:
    assert _in_memory(name) == _expected()["in_memory"][name]


def record() -> None:
    """Write expected.json from the current code (see make.py)."""
    import tempfile

    with pytest.MonkeyPatch.context() as monkeypatch:
        _pin(monkeypatch)
        out: dict[str, Any] = {"aggregate": {}, "in_memory": {}}
        for scenario, args in SCENARIOS.items():
            with tempfile.TemporaryDirectory() as tmp:
                code, tree = _aggregate(Path(tmp), args)
                assert code == 0, scenario
                out["aggregate"][scenario] = tree
        for name in IN_MEMORY:
            out["in_memory"][name] = _in_memory(name)
    EXPECTED.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
