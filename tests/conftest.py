"""Shared fixtures: keys, tiny real data, a CLI runner, and one small federation per session."""

from __future__ import annotations

import ast
import functools
import gc
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

from flsilo.cli.app import run
from flsilo.runtime.cpu import THREAD_VARIABLES
from flsilo.signing import keys
from flsilo.signing.keys import generate_key, load_public_key, parse_public_line, write_new_key
from hub_kit import workspace as hub_workspace
from tests import cpu_report

# Property tests. Tests never assert wall-clock time: no Hypothesis deadlines (first calls
# import torch). The default tier runs each property on a modest number of examples: its
# ``examples(n)``, or 50 where a test names none. CI runs every property test a second time
# with ten times as many (the ``ci`` profile: ``pytest -m 'hypothesis and not slow and not
# vision' --hypothesis-profile ci``, .ci/run).
THOROUGH = 10
settings.register_profile("flsilo", deadline=None, max_examples=50)
settings.register_profile("ci", settings.get_profile("flsilo"), max_examples=50 * THOROUGH)
settings.load_profile("flsilo")


def examples(n: int) -> int:
    """A property test's example count: ``n`` in the default tier, ``THOROUGH`` times ``n``
    under the ``ci`` profile (read when the test module is imported, after pytest loaded
    the profile that ``--hypothesis-profile`` names)."""
    return n * THOROUGH if settings.get_current_profile_name().startswith("ci") else n


def pytest_configure(config: pytest.Config) -> None:
    cpu_report.CpuReport.register(config)
    _temporary_files_in_memory(config)


MEMORY_TEMP_ROOT = Path("/dev/shm")
MEMORY_TEMP_FREE = 2 << 30


def _temporary_files_in_memory(config: pytest.Config) -> None:
    """Tests' temporary folders go to a RAM file system (/dev/shm) where there is one with
    2 GiB free, unless TMPDIR, PYTEST_DEBUG_TEMPROOT or --basetemp chose a place.

    flsilo writes every file atomically and syncs it and its folder (about 13,000 fsyncs a
    tier); on a disk each costs milliseconds of waiting and some CPU, in memory nothing.
    What a test checks is unchanged: the same calls are made, and a crash is simulated by
    killing a process, which a RAM file system survives as a disk does. A passing test's
    folder is removed when it ends (pyproject: tmp_path_retention_policy), so the run holds
    little memory; a failing test's is kept.
    """
    if hasattr(config, "workerinput") or config.option.basetemp:
        return  # an xdist worker is handed its folder; --basetemp chose one
    if os.environ.get("TMPDIR") or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return
    try:
        usage = shutil.disk_usage(MEMORY_TEMP_ROOT)
    except OSError:
        return
    if usage.free >= MEMORY_TEMP_FREE and os.access(MEMORY_TEMP_ROOT, os.W_OK | os.X_OK):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(MEMORY_TEMP_ROOT)


XDIST_MIN_CPUS = 4


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """A whole tier runs on one pytest-xdist worker per CPU (``-n auto``) where there are at
    least four; on fewer, and in a run that names test files or tests, in one process.

    Each worker starts Python, collects every test and imports torch, torch's compiler
    (with the first optimizer), Opacus and ONNX: about 11 s of CPU, against about 30 s for
    the tier's tests themselves. On two CPUs a second worker saved about a third of the
    wall time and added a third to the CPU. ``-n N`` (``-n 0``: no workers) and
    PYTEST_XDIST_AUTO_NUM_WORKERS choose. Each test file goes whole to one worker
    (``--dist loadscope``), so a module's fixtures are built once, not once per worker.
    """
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return  # no xdist, or this is one of its workers (which must not start more)
    if getattr(config.option, "numprocesses", 0) is not None:  # -n given
        return
    if any(arg.endswith(".py") or "::" in arg for arg in config.args):
        return
    if "PYTEST_XDIST_AUTO_NUM_WORKERS" not in os.environ and usable_cpus() < XDIST_MIN_CPUS:
        return
    config.option.numprocesses = "auto"
    if config.option.dist == "no":
        config.option.dist = "loadscope"


# The collector's full passes wait for 100 passes of its middle generation, not 10. A test
# that first imports a large library (torch's compiler, ONNX, Opacus, SciPy) makes hundreds
# of thousands of objects, and each full pass walked them all (about 0.6 s of the tier's
# CPU in a dozen passes during collection and such imports). The young generations are
# collected as before, and flsilo's own gc.collect() before it forks is unchanged.
gc.set_threshold(*gc.get_threshold()[:2], 100)


@pytest.fixture(autouse=True)
def _frozen_heap() -> None:
    """Each test starts with the heap it inherits frozen (``gc.freeze``): the collector's
    full passes then walk only what the test itself made, not torch and every module that
    the run has imported. Before a DataLoader forks its workers, flsilo collects the whole
    heap and freezes it (site_kit/data/stream.py); in a test process that heap is the whole
    run's, and those passes took about a fifth of the tier's CPU."""
    gc.freeze()


@pytest.fixture(autouse=True)
def _forget_modules_from_temporary_folders(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """A module a test imported from its temporary folder (a model plug-in) is forgotten
    when the test ends: a later test that writes one of the same name gets its own, and
    the folder itself is removed when the test passes (pyproject: tmp_path_retention_policy)."""
    count, last = len(sys.modules), next(reversed(sys.modules))
    yield
    if len(sys.modules) == count and next(reversed(sys.modules)) == last:
        return  # nothing imported (sys.modules keeps import order: a new name comes last)
    names = list(sys.modules)
    new = names[names.index(last) + 1 :] if last in sys.modules else names
    if len(new) != len(names) - count:
        new = names  # the test also removed modules: look at every one
    base = str(tmp_path_factory.getbasetemp())
    for name in new:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(base):
            del sys.modules[name]


def _test_defaults(monkeypatch: pytest.MonkeyPatch, node: pytest.Item | None) -> None:
    """What every test runs under (each part can be turned off as said):

    - keys encrypted in a test take 1 bcrypt round instead of flsilo's 64 (0.5 s of CPU
      per write and per unlock), unless the test is marked ``real_kdf``: the rounds are
      what it checks. Every other check on an encrypted key is the same at any rounds;
    - numeric work runs on one thread (OMP_NUM_THREADS=1, which flsilo's default honours;
      a test may set its own). By default flsilo sizes torch's pool to every CPU of the
      process: beside other processes that oversubscribes the cores, and torch's idle
      threads spin (one simulate test took 6x the CPU on two threads);
    - sites decode their data in the test's own process (flsilo's default worker count
      computed for one CPU: 0) unless the test passes ``--workers`` or is marked
      ``default_workers``. Forking a DataLoader worker from a test process cost about a
      second of CPU per train or evaluate, more than the training. Workers change nothing
      in the results (tests/integration/test_streaming.py proves it bit for bit);
    - a lock-free reader of the hub's log reads a log that fails its check again at once,
      not after a quarter of a second (five tries: a second of waiting for each refusal
      of a tampered log), unless the test is marked ``read_pause``: a writer that signs
      during the pause is what it checks. The tries are the same.
    """
    marked = node.get_closest_marker if node is not None else lambda _name: None
    if marked("real_kdf") is None:
        monkeypatch.setattr(keys, "KDF_ROUNDS", 1)
    if marked("read_pause") is None:
        monkeypatch.setattr(hub_workspace, "UNLOCKED_READ_PAUSE_S", 0.0)
    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, "1")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    if marked("default_workers") is None and torch is not None:
        # (a test that is the first to import torch gets the default: only one per run)
        from site_kit.data import stream

        monkeypatch.setattr(stream, "cpu_budget", lambda: 1)


@pytest.fixture(autouse=True)
def _defaults(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    _test_defaults(monkeypatch, request.node)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[object]) -> Iterator[object]:
    """A module's or a session's fixture (a federation trained once for many tests) is set
    up under the same defaults as a test: pytest sets those fixtures up before any of a
    test's own, so they would otherwise train with every CPU's threads and DataLoader
    workers (about 3 s of CPU for the detection federation alone)."""
    if fixturedef.scope == "function":
        return (yield)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _test_defaults(monkeypatch, None)
        return (yield)


def needs(module: str, reason: str) -> pytest.MarkDecorator:
    """Skip unless ``module`` is installed, without importing it while tests are collected
    (Opacus takes 1.7 s of CPU to import, ONNX 0.6 s: paid only where a test uses them)."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=reason)


SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(
    SSH_KEYGEN is None,
    reason="ssh-keygen (OpenSSH) is not installed: interop with stock OpenSSH not tested",
)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``flsilo ARGS`` in-process, through the same error handling as the real command."""

    def invoke(*args: object) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def make_key(path: Path, key_type: str = "ed25519") -> Path:
    write_new_key(path, generate_key(key_type), None, path.name)
    return path


def another_hubs_package(cli: Callable[..., Any], root: Path) -> Path:
    """Round 0 of another hub of the same federation name and model: signed by a key that
    no site of the session's federation confirmed (the hub alone: no site need train)."""
    key = make_key(root / "other-hub-key")
    hub = root / "other-hub"
    digits = ",".join(str(d) for d in range(10))
    made = cli("hub", "init", hub, "--federation", "fed", "--model", "logreg", "--classes",
               digits, "--input-shape", "1,8,8", "--key", key, "--min-sites", "2")  # fmt: skip
    assert made.code == 0, made.err
    return hub / "packages" / "fed-r0000.safetensors"


def fingerprint(pub: Path) -> str:
    return load_public_key(pub).fingerprint


def hub_root(hub: Path | str) -> tuple[str, str]:
    """``audit``'s trust root for a hub a test set up honestly: the fingerprint of the key it
    was initialised with, as its administrator reads it out at ``hub init``."""
    first = json.loads((Path(hub) / "events.jsonl").read_text().split("\n", 1)[0])
    return ("--hub-fingerprint", parse_public_line(first["hub_key"]).fingerprint)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root with its sha256 and mode: to prove a command changed nothing."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(
                p.stat().st_mode
            )
    return out


REPOSITORY = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("flsilo", "site_kit", "hub_kit", "sim_kit")


@functools.cache
def source_calls() -> dict[str, tuple[ast.Call, ...]]:
    """Every call in the sources of flsilo and the kits, by path from the repository root
    (``flsilo/cli/app.py``), in source order: parsed once per run for the checks that read
    them all (error codes spelled through the registry, bounded reads)."""
    calls = {}
    for package in SOURCE_PACKAGES:
        for path in sorted((REPOSITORY / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
            calls[path.relative_to(REPOSITORY).as_posix()] = tuple(found)
    return calls


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits data set, parsed once per run (from its text form: 0.4 s of CPU each)."""
    from sim_kit.datasets import load_digits

    x, y = load_digits()
    x.flags.writeable = y.flags.writeable = False
    return x, y


def digits_npz(path: Path, indices: np.ndarray) -> Path:
    x, y = _digits()
    np.savez(path, x=x[indices], y=y[indices])
    return path


@dataclass
class Federation:
    """A hub with two enrolled sites that have each trained round 0 (bundles not yet carried)."""

    root: Path
    hub: Path
    keys: Path
    sites: dict[str, Path]
    bundles: dict[str, Path]
    data: dict[str, Path]
    _settings: list[Path] | None = field(default=None, repr=False, compare=False)

    def settings_files(self) -> list[Path]:
        """site.toml and hub.toml under root (found once: a federation's layout is fixed)."""
        if self._settings is None:
            names = ("site.toml", "hub.toml")
            self._settings = [p for name in names for p in self.root.rglob(name)]
        return self._settings

    def copy(self, dest: Path) -> Federation:
        shutil.copytree(self.root, dest, symlinks=True)

        def move(p: Path) -> Path:
            return dest / p.relative_to(self.root)

        fed = Federation(
            dest,
            move(self.hub),
            move(self.keys),
            {k: move(v) for k, v in self.sites.items()},
            {k: move(v) for k, v in self.bundles.items()},
            {k: move(v) for k, v in self.data.items()},
        )
        # site.toml and hub.toml hold absolute paths to keys and data: point them at the copy
        for toml in map(move, self.settings_files()):
            toml.write_text(toml.read_text().replace(str(self.root), str(dest)))
        return fed

    def carry(self, *sites: str) -> None:
        for site in sites or tuple(self.bundles):
            b = self.bundles[site]
            shutil.copy(b, self.hub / "inbox" / b.name)
            shutil.copy(f"{b}.sig", self.hub / "inbox" / f"{b.name}.sig")


def build_federation(
    root: Path,
    schedule: str = "periodic:2",
    model: str = "logreg",
    extra: tuple[str, ...] = (),
    key_types: dict[str, str] | None = None,
) -> Federation:
    root.mkdir(parents=True)
    keys = root / "keys"
    for name in ("hub", "site-a", "site-b"):
        make_key(keys / name, (key_types or {}).get(name, "ed25519"))
    hub = root / "hub"
    assert (
        run(
            [
                "hub",
                "init",
                str(hub),
                "--federation",
                "fed",
                "--model",
                model,
                "--classes",
                ",".join(str(d) for d in range(10)),
                "--input-shape",
                "1,8,8",
                "--key",
                str(keys / "hub"),
                "--schedule",
                schedule,
                "--local-epochs",
                "1",
                "--batch-size",
                "32",
                "--lr",
                "0.1",
                "--min-sites",
                "2",
                *extra,
            ]
        )
        == 0
    )
    rng = np.random.default_rng(0)
    order = rng.permutation(1797)
    data = {
        "site-a": digits_npz(root / "a.npz", order[:300]),
        "site-b": digits_npz(root / "b.npz", order[300:500]),
    }
    sites, bundles = {}, {}
    for site in ("site-a", "site-b"):
        pub = keys / f"{site}.pub"
        assert (
            run(["hub", "enroll", str(hub), site, str(pub), "--fingerprint", fingerprint(pub)]) == 0
        )
        kit = root / f"kit-{site}"
        assert run(["hub", "kit", str(hub), site, "--out", str(kit)]) == 0
        sites[site] = root / site
        assert (
            run(
                [
                    "site",
                    "init",
                    str(sites[site]),
                    "--kit",
                    str(kit),
                    "--site-id",
                    site,
                    "--key",
                    str(keys / site),
                    "--hub-fingerprint",
                    fingerprint(keys / "hub.pub"),
                    "--data",
                    str(data[site]),
                ]
            )
            == 0
        )
        assert (
            run(
                [
                    "train",
                    str(sites[site] / "packages" / "fed-r0000.safetensors"),
                    "--site",
                    str(sites[site]),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        bundles[site] = sites[site] / "outbox" / f"fed-r0000-{site}.safetensors"
    return Federation(root, hub, keys, sites, bundles, data)


@pytest.fixture(scope="session")
def federation_template(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    os.environ.pop("FLSILO_PASSPHRASE", None)
    return build_federation(tmp_path_factory.mktemp("template") / "fed")


@pytest.fixture
def federation(federation_template: Federation, tmp_path: Path) -> Federation:
    """A fresh private copy of the session's federation."""
    return federation_template.copy(tmp_path / "fed")


def ssh_keygen(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert SSH_KEYGEN is not None
    return subprocess.run([SSH_KEYGEN, *args], input=stdin, capture_output=True, check=False)


def stock_verify(
    allowed: str | Path, principal: str, namespace: str, sig: str | Path, message: bytes
) -> subprocess.CompletedProcess[bytes]:
    """``ssh-keygen -Y verify``: stock OpenSSH checks ``message`` against ``sig``."""
    return ssh_keygen(
        "-Y",
        "verify",
        "-f",
        str(allowed),
        "-I",
        principal,
        "-n",
        namespace,
        "-s",
        str(sig),
        stdin=message,
    )


def run_forked(*args: object, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """``flsilo ARGS``, optionally killed at ``fault`` (``FLSILO_FAULT``, see
    flsilo/runtime/faults.py; an inherited fault setting is dropped), in a fork of the
    test's process: a process of its own that dies or fails as the command would (the kill is a real SIGKILL, a full disk a real ENOSPC from its own first write
    count), without starting Python and importing flsilo again (about 0.3 s of CPU a call).

    The child inherits the test's state (its patches included) and never returns into
    pytest. Output goes to files, not pipes.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
                os.environ.pop("FLSILO_FAULT", None)
                if fault:
                    os.environ["FLSILO_FAULT"] = fault
                code = run([str(a) for a in args])
            except BaseException:  # noqa: BLE001 - reported, never raised into pytest
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            ["flsilo", *map(str, args)],
            os.waitstatus_to_exitcode(status),
            out.read().decode(),
            err.read().decode(),
        )
