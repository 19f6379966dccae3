"""Every error code flsilo can produce, produced once through the public surface (issue 9).

One table: each row makes one failure happen the way a person would meet it (a CLI command,
or the public kit function that raises it) and the test checks what that person sees: the
exit status, one line ``flsilo: error[CODE]: ...`` naming the file where there is one, with a
hint, and that the inputs the command was given are unchanged. Faults that only the operating
system causes (a missing optional package, no GPU, no network index, end of input at a
prompt, a full disk) are injected with monkeypatch: tests run as root, where chmod blocks
nothing.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flsilo.cli.common import error_line
from flsilo.plans.plan import Plan
from flsilo.runtime.errors import FlsiloError
from tests.conftest import Federation, Result, fingerprint, make_key, tree_digest

DIGITS = ",".join(str(d) for d in range(10))
PACKAGE0 = "fed-r0000.safetensors"


@dataclass
class Ctx:
    """What a case may use: the CLI, a scratch folder, monkeypatch, and a federation on demand."""

    cli: Callable[..., Result]
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest
    watched: dict[Path, dict[str, str] | bytes] = field(default_factory=dict)

    @property
    def fed(self) -> Federation:
        fed: Federation = self.request.getfixturevalue("federation")
        return fed

    def watch(self, *paths: Path) -> None:
        """Record files or folders that the failing command must leave exactly as they were."""
        for p in paths:
            self.watched[p] = tree_digest(p) if p.is_dir() else p.read_bytes()

    def kit(self, call: Callable[[], object]) -> Result:
        """Run a public kit function and render its error as the CLI would print it."""
        with pytest.raises(FlsiloError) as caught:
            call()
        err = caught.value
        return Result(int(err.exit_code), "", error_line(err) + "\n")


@dataclass(frozen=True)
class Outcome:
    result: Result
    path: Path | str | None  # the file the line must name; None where the failure has none


Case = Callable[[Ctx], Outcome]
CASES: dict[str, tuple[int, Case]] = {}


def case(code: str, exit_code: int, name: str | None = None) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        key = name or code
        assert key not in CASES
        CASES[key] = (exit_code, fn)
        return fn

    return register


def code_of(key: str) -> str:
    return key.split("@", 1)[0]


# -- helpers ---------------------------------------------------------------------------------


def site_a(ctx: Ctx) -> Path:
    return ctx.fed.sites["site-a"]


def check_data(ctx: Ctx, data: Path, *extra: object) -> Outcome:
    site = site_a(ctx)
    ctx.watch(site)
    if data.exists():
        ctx.watch(data)
    return Outcome(ctx.cli("site", "check-data", site, "--data", data, *extra), data)


def hub_init(ctx: Ctx, out: Path, key: Path, *extra: object) -> Result:
    return ctx.cli(
        "hub",
        "init",
        out,
        "--federation",
        "fed",
        "--model",
        "logreg",
        "--classes",
        DIGITS,
        "--input-shape",
        "1,8,8",
        "--key",
        key,
        *extra,
    )


def enroll_new(ctx: Ctx, site: str, pub: Path, *extra: object) -> Result:
    fed = ctx.fed
    ctx.watch(fed.hub)
    return ctx.cli("hub", "enroll", fed.hub, site, pub, "--fingerprint", fingerprint(pub), *extra)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_pip(ctx: Ctx, *, wheel_files: tuple[str, ...] = (), fail: str | None = None) -> None:
    """Stand in for pip (no network here): fail with ``fail``, or write the named wheels."""
    real_run = subprocess.run

    def run(cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if not (isinstance(cmd, list) and cmd[1:3] == ["-m", "pip"]):
            return real_run(cmd, *args, **kwargs)
        if fail is not None:
            return subprocess.CompletedProcess(cmd, 1, "", f"ERROR: {fail}\n")
        if "wheel" in cmd:
            dest = Path(cmd[cmd.index("--wheel-dir") + 1])
            (dest / "flsilo-0.1.0-py3-none-any.whl").write_bytes(b"PK")
        if "download" in cmd:
            dest = Path(cmd[cmd.index("--dest") + 1])
            for name in wheel_files:
                (dest / name).write_bytes(b"PK")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    ctx.monkeypatch.setattr("hub_kit.wheelhouse.subprocess.run", run)


def csv_file(path: Path, header: list[str], rows: list[str]) -> Path:
    path.write_text(",".join(header) + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


FEATURES = [f"p{i}" for i in range(64)]


# -- the table -------------------------------------------------------------------------------


@case("aborted", 1)
def _aborted(ctx: Ctx) -> Outcome:
    # end of input (Ctrl-D) at the interactive passphrase prompt
    def eof(*_: object) -> str:
        raise EOFError

    ctx.monkeypatch.delenv("FLSILO_PASSPHRASE", raising=False)
    ctx.monkeypatch.setattr(sys, "stdin", _Tty())
    ctx.monkeypatch.setattr(getpass, "getpass", eof)
    result = ctx.cli("keys", "new", ctx.tmp / "k")
    assert not (ctx.tmp / "k").exists()
    return Outcome(result, None)


@case("os", 1)
def _os(ctx: Ctx) -> Outcome:
    # an operating-system failure no check foresees: --out lies under a regular file
    fed = ctx.fed
    ctx.watch(fed.hub)
    blocker = ctx.tmp / "usb"
    blocker.write_text("a file, not the stick's folder")
    result = ctx.cli("hub", "kit", fed.hub, "site-a", "--out", blocker / "kit-site-a")
    return Outcome(result, blocker)


@case("already-enrolled", 2)
def _already_enrolled(ctx: Ctx) -> Outcome:
    pub = ctx.fed.keys / "site-a.pub"
    return Outcome(enroll_new(ctx, "site-c", pub), pub)


@case("already-enrolled", 2, "already-enrolled@rekey")
def _already_enrolled_rekey(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    pub = fed.keys / "site-b.pub"
    ctx.watch(fed.hub)
    result = ctx.cli("hub", "rekey", fed.hub, "site-a", pub, "--fingerprint", fingerprint(pub))
    return Outcome(result, pub)


@case("bad-role", 2)
def _bad_role(ctx: Ctx) -> Outcome:
    pub = make_key(ctx.tmp / "new").with_suffix(".pub")
    return Outcome(enroll_new(ctx, "site-c", pub, "--role", "admin"), None)


@case("bad-site-id", 2)
def _bad_site_id(ctx: Ctx) -> Outcome:
    pub = make_key(ctx.tmp / "new").with_suffix(".pub")
    return Outcome(enroll_new(ctx, "Site C", pub), None)


@case("bad-norm-gate", 2)
def _bad_norm_gate(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    fed.carry()
    ctx.watch(fed.hub)
    return Outcome(ctx.cli("aggregate", fed.hub, "--norm-gate", "0"), None)


@case("no-inbox", 2)
def _no_inbox(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    ctx.watch(fed.hub)
    missing = ctx.tmp / "stick" / "bundles"
    return Outcome(ctx.cli("aggregate", fed.hub, "--inbox", missing), missing)


@case("bad-privacy-ledger", 4)
def _bad_privacy_ledger(ctx: Ctx) -> Outcome:
    from site_kit.privacy import LEDGER_FILE, prepare_round

    ledger = ctx.tmp / LEDGER_FILE
    ledger.write_text("{not json", encoding="utf-8")
    ctx.watch(ctx.tmp)
    plan = Plan(local_epochs=1, batch_size=16, dp_noise_multiplier=1.0, dp_budget=10)
    result = ctx.kit(lambda: prepare_round(ctx.tmp, ctx.tmp / "w0", plan, 200, 0, "a" * 64))
    return Outcome(result, ledger)


@case("bad-privacy-ledger", 4, "bad-privacy-ledger@version")
def _bad_privacy_ledger_version(ctx: Ctx) -> Outcome:
    from site_kit.privacy import LEDGER_FILE, prepare_round

    plan = Plan(local_epochs=1, batch_size=16, dp_noise_multiplier=1.0, dp_budget=10)
    prepare_round(ctx.tmp, ctx.tmp / "w0", plan, 200, 0, "a" * 64)  # a real ledger, one round
    ledger = ctx.tmp / LEDGER_FILE
    doc = json.loads(ledger.read_text(encoding="utf-8"))
    ledger.write_text(json.dumps({**doc, "version": doc["version"] + 1}), encoding="utf-8")
    ctx.watch(ctx.tmp)
    result = ctx.kit(lambda: prepare_round(ctx.tmp, ctx.tmp / "w1", plan, 200, 1, "b" * 64))
    assert "privacy ledger" in result.err and "version" in result.err
    return Outcome(result, ledger)


@case("csv-header", 4)
def _csv_header(ctx: Ctx) -> Outcome:
    empty = ctx.tmp / "empty.csv"
    empty.write_bytes(b"")
    return check_data(ctx, empty)


@case("csv-missing-column", 4)
def _csv_missing_label(ctx: Ctx) -> Outcome:
    return check_data(ctx, csv_file(ctx.tmp / "t.csv", ["class", *FEATURES], []))


@case("csv-syntax", 4)
def _csv_syntax(ctx: Ctx) -> Outcome:
    # a cell over the csv module's field size limit: the file is not well-formed CSV
    row = ",".join(["1", "x" * 200_000, *["0"] * 63])
    outcome = check_data(ctx, csv_file(ctx.tmp / "t.csv", ["label", *FEATURES], [row]))
    assert "row 2:" in outcome.result.err  # the first data row, after the header (row 1)
    return outcome


@case("data-format", 2)
def _data_format(ctx: Ctx) -> Outcome:
    data = ctx.tmp / "samples.parquet"
    data.write_bytes(b"PAR1")
    return check_data(ctx, data)


@case("data-missing", 4)
def _data_missing(ctx: Ctx) -> Outcome:
    return check_data(ctx, ctx.tmp / "no-such-data.npz")


@case("data-missing", 4, "data-missing@imagefolder")
def _data_missing_imagefolder(ctx: Ctx) -> Outcome:
    data = ctx.tmp / "images.npz"
    np.savez(data, x=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(2, np.int64))
    return check_data(ctx, data, "--data-format", "imagefolder")


@case("npz-arrays", 4)
def _npz_arrays(ctx: Ctx) -> Outcome:
    data = ctx.tmp / "d.npz"
    np.savez(data, features=np.zeros((2, 64), np.float32), labels=np.zeros(2, np.int64))
    return check_data(ctx, data)


@case("npz-dtype", 4)
def _npz_dtype(ctx: Ctx) -> Outcome:
    data = ctx.tmp / "d.npz"
    np.savez(data, x=np.full((2, 64), "a"), y=np.zeros(2, np.int64))
    return check_data(ctx, data)


@case("demo-data", 2)
def _demo_data(ctx: Ctx) -> Outcome:
    # scikit-learn (the demo extra) is not installed
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "sklearn" else real(name, *args)

    ctx.monkeypatch.setattr("sim_kit.datasets.importlib.util.find_spec", find_spec)
    result = ctx.cli("demo", "--out", ctx.tmp / "demo")
    assert not (ctx.tmp / "demo").exists()
    return Outcome(result, None)


def _tiny_training(model_spec: str | None = None) -> tuple[Any, Any, Plan]:
    from flsilo.models.registry import build_model
    from site_kit.data import Dataset

    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(32, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 32))
    model = build_model(model_spec or "logreg", (1, 8, 8), 10)
    return model, data, Plan(local_epochs=1, batch_size=8, dp_noise_multiplier=1, dp_budget=9)


@case("dp-needs-opacus", 2)
def _dp_needs_opacus(ctx: Ctx) -> Outcome:
    import torch

    from site_kit.privacy import DPRun, plan_spend
    from site_kit.training import train

    ctx.monkeypatch.setitem(sys.modules, "opacus", None)  # the dp extra is not installed
    model, data, plan = _tiny_training()
    run = DPRun(plan_spend(plan, len(data)), b"s" * 32)
    result = ctx.kit(lambda: train(model, data, plan, seed=1, device=torch.device("cpu"), dp=run))
    return Outcome(result, None)


@case("dp-model", 2)
def _dp_model(ctx: Ctx) -> Outcome:
    pytest.importorskip("opacus", reason="needs the 'dp' extra (Opacus)")
    import torch
    from torch import nn

    from site_kit.privacy import DPRun, plan_spend
    from site_kit.training import train

    _, data, plan = _tiny_training()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    run = DPRun(plan_spend(plan, len(data)), b"s" * 32)
    result = ctx.kit(lambda: train(model, data, plan, seed=1, device=torch.device("cpu"), dp=run))
    return Outcome(result, None)


@case("dp-distributed", 2)
def _dp_distributed(ctx: Ctx) -> Outcome:
    import torch

    from site_kit.privacy import DPRun, plan_spend
    from site_kit.training import DistContext, train

    model, data, plan = _tiny_training()
    run = DPRun(plan_spend(plan, len(data)), b"s" * 32)
    dist = DistContext(rank=0, world=2, local_rank=0)  # as under torchrun --nproc-per-node 2
    result = ctx.kit(
        lambda: train(model, data, plan, seed=1, device=torch.device("cpu"), dist=dist, dp=run)
    )
    return Outcome(result, None)


@case("hub-key-changed", 1)
def _hub_key_changed(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    site = site_a(ctx)
    (site / "hub.pub").write_bytes((fed.keys / "site-b.pub").read_bytes())
    ctx.watch(site)
    result = ctx.cli("train", site / "packages" / PACKAGE0, "--site", site, "--device", "cpu")
    return Outcome(result, site / "hub.pub")


@case("state", 1)
def _state(ctx: Ctx) -> Outcome:
    site = site_a(ctx)
    (site / "state.json").write_text("{truncated", encoding="utf-8")
    ctx.watch(site)
    result = ctx.cli("train", site / "packages" / PACKAGE0, "--site", site, "--device", "cpu")
    return Outcome(result, site / "state.json")


@case("no-federation", 4)
def _no_federation(ctx: Ctx) -> Outcome:
    site = site_a(ctx)
    (site / "federation.toml").unlink()
    ctx.watch(site)
    return Outcome(ctx.cli("site", "status", site), site / "federation.toml")


@case("no-gpu", 2)
def _no_gpu(ctx: Ctx) -> Outcome:
    import torch

    ctx.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fed = ctx.fed
    package, data = fed.hub / "packages" / PACKAGE0, fed.data["site-a"]
    ctx.watch(package, data)
    result = ctx.cli(
        "evaluate", package, "--data", data, "--key", fed.keys / "hub.pub", "--device", "cuda"
    )
    return Outcome(result, None)


@case("kit-site", 2)
def _kit_site(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    kit = fed.root / "kit-site-a"
    ctx.watch(kit)
    result = ctx.cli(
        "site",
        "init",
        ctx.tmp / "site",
        "--kit",
        kit,
        "--site-id",
        "site-b",
        "--key",
        fed.keys / "site-b",
        "--hub-fingerprint",
        fingerprint(fed.keys / "hub.pub"),
    )
    assert not (ctx.tmp / "site" / "site.toml").exists()
    return Outcome(result, kit)


@case("init-weights", 2)
def _init_weights(ctx: Ctx) -> Outcome:
    key = make_key(ctx.tmp / "hub")
    weights = ctx.tmp / "pretrained.safetensors"
    weights.write_bytes(b"not a safetensors file")
    ctx.watch(weights)
    result = hub_init(ctx, ctx.tmp / "h", key, "--init-weights", weights)
    assert not (ctx.tmp / "h").exists()
    return Outcome(result, weights)


@case("no-head", 2)
def _no_head(ctx: Ctx) -> Outcome:
    (ctx.tmp / "headless.py").write_text(
        "from torch import nn\n"
        "def build(shape, n):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, n, bias=False))\n"
    )
    ctx.monkeypatch.syspath_prepend(str(ctx.tmp))
    key = make_key(ctx.tmp / "hub")
    result = ctx.cli(
        "hub",
        "init",
        ctx.tmp / "h",
        "--federation",
        "fed",
        "--model",
        "headless:build",
        "--classes",
        DIGITS,
        "--input-shape",
        "1,8,8",
        "--key",
        key,
        "--schedule",
        "closed-form",
    )
    assert not (ctx.tmp / "h").exists()
    return Outcome(result, None)


@case("log-missing", 1)
def _log_missing(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    log = fed.hub / "events.jsonl"
    log.write_bytes(b"")
    ctx.watch(fed.hub)
    return Outcome(ctx.cli("hub", "status", fed.hub), log)


@case("wrong-hub-key", 2)
def _wrong_hub_key(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    toml = fed.hub / "hub.toml"
    text = toml.read_text(encoding="utf-8")
    hub_key = str(fed.keys / "hub")
    assert hub_key in text
    toml.write_text(text.replace(hub_key, str(fed.keys / "site-a")), encoding="utf-8")
    pub = make_key(ctx.tmp / "new").with_suffix(".pub")
    return Outcome(enroll_new(ctx, "site-c", pub), fed.keys / "site-a")


@case("passphrase-file", 1)
def _passphrase_file(ctx: Ctx) -> Outcome:
    folder = ctx.tmp / "secrets"  # a folder where the passphrase file should be
    folder.mkdir()
    result = ctx.cli("keys", "new", ctx.tmp / "k", "--passphrase-file", folder)
    assert not (ctx.tmp / "k").exists()
    return Outcome(result, folder)


@case("plot-extra", 2)
def _plot_extra(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    ctx.monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot extra is not installed
    ctx.watch(fed.hub)
    result = ctx.cli("hub", "history", fed.hub, "--png", ctx.tmp / "h.png")
    assert not (ctx.tmp / "h.png").exists()
    return Outcome(result, None)


@case("signers-missing", 4)
def _signers_missing(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    package = fed.hub / "packages" / PACKAGE0
    missing = ctx.tmp / "allowed_signers"
    ctx.watch(package.parent)
    return Outcome(ctx.cli("verify", package, "--signers", missing), missing)


def _package_copy(ctx: Ctx, hub: Path) -> Path:
    dest = ctx.tmp / "carried"
    dest.mkdir()
    package = dest / PACKAGE0
    for suffix in ("", ".sig"):
        (dest / (PACKAGE0 + suffix)).write_bytes(
            (hub / "packages" / (PACKAGE0 + suffix)).read_bytes()
        )
    return package


@case("oms-malformed", 4)
def _oms_malformed(ctx: Ctx) -> Outcome:
    fed = ctx.fed
    package = _package_copy(ctx, fed.hub)
    bundle = package.parent / (PACKAGE0 + ".sigstore.json")
    bundle.write_text("{", encoding="utf-8")
    ctx.watch(package.parent)
    return Outcome(ctx.cli("verify", package, "--key", fed.keys / "hub.pub"), bundle)


@case("oms-key-type", 3)
def _oms_key_type(ctx: Ctx) -> Outcome:
    from flsilo.signing import oms
    from flsilo.signing.keys import generate_key

    fed = ctx.fed  # an Ed25519 hub: it never writes model signing bundles
    package = _package_copy(ctx, fed.hub)
    bundle = package.parent / (PACKAGE0 + ".sigstore.json")
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    bundle.write_bytes(oms.make_bundle(generate_key("ecdsa-p256"), PACKAGE0, sha))  # type: ignore[arg-type]
    ctx.watch(package.parent)
    return Outcome(ctx.cli("verify", package, "--key", fed.keys / "hub.pub"), bundle)


@case("oms-bad-signature", 3)
def _oms_bad_signature(ctx: Ctx) -> Outcome:
    from flsilo.signing import oms
    from flsilo.signing.keys import generate_key

    key = make_key(ctx.tmp / "hub", "ecdsa-p256")
    assert hub_init(ctx, ctx.tmp / "h", key).code == 0
    package = _package_copy(ctx, ctx.tmp / "h")
    bundle = package.parent / (PACKAGE0 + ".sigstore.json")
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    # a well-formed bundle for this very file, signed by some other P-256 key
    bundle.write_bytes(oms.make_bundle(generate_key("ecdsa-p256"), PACKAGE0, sha))  # type: ignore[arg-type]
    ctx.watch(package.parent)
    return Outcome(ctx.cli("verify", package, "--key", f"{key}.pub"), bundle)


@case("pip-failed", 1)
def _pip_failed(ctx: Ctx) -> Outcome:
    fake_pip(ctx, fail="Could not find a version that satisfies the requirement (no network)")
    result = ctx.cli("wheelhouse", "build", ctx.tmp / "wheels")
    # a failed build leaves nothing behind, so the same command can simply be run again
    assert not (ctx.tmp / "wheels").exists()
    assert list(ctx.tmp.glob(".wheels*")) == []
    return Outcome(result, None)


@case("torch-version", 2)
def _torch_version(ctx: Ctx) -> Outcome:
    from importlib import metadata

    fake_pip(ctx)
    source = ctx.tmp / "checkout"  # a checkout without constraints.txt, and no torch installed
    source.mkdir()
    real = metadata.version

    def version(name: str) -> str:
        if name == "torch":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    ctx.monkeypatch.setattr("hub_kit.wheelhouse.metadata.version", version)
    result = ctx.cli("wheelhouse", "build", ctx.tmp / "wheels", "--source", source)
    return Outcome(result, None)


@case("wheelhouse-file", 4)
def _wheelhouse_file(ctx: Ctx) -> Outcome:
    fake_pip(ctx, wheel_files=("torch-2.0.0-cp311-cp311-linux_x86_64.whl", "stray.whl"))
    return Outcome(
        ctx.cli("wheelhouse", "build", ctx.tmp / "wheels"), str(ctx.tmp / "wheels" / "stray.whl")
    )


@case("wheelhouse-source", 2)
def _wheelhouse_source(ctx: Ctx) -> Outcome:
    # flsilo installed from a wheel, not run from its checkout
    ctx.monkeypatch.setattr("hub_kit.wheelhouse.project_root", lambda: None)
    result = ctx.cli("wheelhouse", "build", ctx.tmp / "wheels")
    assert not (ctx.tmp / "wheels").exists()
    return Outcome(result, None)


@case("wheelhouse-missing", 2)
def _wheelhouse_missing(ctx: Ctx) -> Outcome:
    key = make_key(ctx.tmp / "hub")
    out = ctx.tmp / "wheels"
    out.mkdir()
    (out / "requirements.txt").write_text("flsilo==0.1.0\n")
    ctx.watch(out)
    return Outcome(ctx.cli("wheelhouse", "sign", out, "--key", key), out)


# -- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(CASES))
def test_error_code_is_produced(
    key: str, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request
) -> None:
    exit_code, make = CASES[key]
    code = code_of(key)
    ctx = Ctx(cli, tmp_path, monkeypatch, request)
    outcome = make(ctx)
    result = outcome.result
    lines = [ln for ln in result.err.splitlines() if ln.startswith("flsilo: error[")]
    assert len(lines) == 1, result.err
    line = lines[0]
    assert line.startswith(f"flsilo: error[{code}]: "), line
    assert result.code == exit_code, (result.code, line)
    assert "(hint: " in line and line.endswith(")"), line
    if outcome.path is not None:
        assert str(outcome.path) in line, line
    for path, before in ctx.watched.items():
        now = tree_digest(path) if path.is_dir() else path.read_bytes()
        assert now == before, f"{path} changed"


def test_every_listed_code_has_a_case() -> None:
    listed = {
        "aborted", "already-enrolled", "bad-norm-gate", "bad-privacy-ledger", "bad-role",
        "bad-site-id", "bad-statistics", "csv-header", "csv-missing-column", "csv-syntax",
        "data-format", "data-missing", "demo-data", "dp-distributed", "dp-model",
        "dp-needs-opacus", "hub-key-changed", "init-weights", "kit-site", "log-missing",
        "no-federation", "no-gpu", "no-head", "no-inbox", "npz-arrays", "npz-dtype",
        "oms-bad-signature", "oms-key-type", "oms-malformed", "os", "passphrase-file",
        "pip-failed", "plot-extra", "signers-missing", "state", "torch-version",
        "wheelhouse-file", "wheelhouse-missing", "wheelhouse-source", "wrong-hub-key",
    }  # fmt: skip
    covered = {code_of(k) for k in CASES} | {"bad-statistics"}  # the slow test below
    assert listed <= covered, sorted(listed - covered)


@pytest.mark.slow
def test_bad_statistics_is_a_quarantine_reason(cli, tmp_path: Path) -> None:
    """A statistics bundle whose class counts do not add up is refused, named and kept."""
    from tests.conftest import build_federation
    from tests.integration.test_heads import MLP
    from tests.integration.test_hub import resign

    fed = build_federation(tmp_path / "fed", "closed-form", MLP)
    fed.carry()
    bundle = fed.bundles["site-a"]

    def uneven(raw: dict[str, Any]) -> None:
        np.frombuffer(raw["statistics.class_counts"].data, dtype="<f8")[0] += 0.5

    carried = resign(bundle, fed.hub / "inbox" / bundle.name, fed.keys / "site-a", mutate=uneven)
    inbox = tree_digest(fed.hub / "inbox")
    dry = cli("aggregate", fed.hub, "--dry-run", "--json")
    rows = {r["site"]: r for r in json.loads(dry.out)["report"]["rows"]}
    assert rows["site-a"]["verdict"] == "rejected" and rows["site-a"]["code"] == "bad-statistics"
    assert rows["site-a"]["hint"] and rows["site-b"]["verdict"] == "accepted"
    result = cli("aggregate", fed.hub)
    assert result.code == 1  # one site left: below --min-sites, so the round waits
    assert "bad-statistics" in result.err and "error[not-enough-sites]" in result.err
    reasons = list((fed.hub / "quarantine").rglob("*site-a*.reason.txt"))
    assert reasons and json.loads(reasons[0].read_text())["code"] == "bad-statistics"
    assert tree_digest(fed.hub / "inbox") == inbox  # the carried files are kept as they were
    assert carried.exists()
