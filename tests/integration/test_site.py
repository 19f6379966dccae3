"""The site through the CLI: training, resume after a kill, rollback, bad data, evaluate, DDP."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsilo.format import manifest as mf
from flsilo.format.artifact import scan_file
from flsilo.format.tensorfile import Header, RawTensor
from tests.conftest import (
    Federation,
    another_hubs_package,
    digits_npz,
    fingerprint,
    make_key,
    tree_digest,
)

DIGITS = ",".join(str(d) for d in range(10))


def _tensors_of(header: Header, data: bytearray) -> dict[str, RawTensor]:
    """A package's tensors, from its data section, to write into another artifact."""
    view = memoryview(data)
    return {t.name: RawTensor(t.dtype, t.shape, view[t.begin : t.end]) for t in header.tensors}


def data_digest(path: Path) -> str:
    scan = scan_file(path)
    with path.open("rb") as fh:
        fh.seek(scan.header.data_start)
        return hashlib.sha256(fh.read()).hexdigest()


def new_hub(root: Path, cli, *, epochs: int = 1, model: str = "logreg") -> tuple[Path, Path]:
    keys = root / "keys"
    make_key(keys / "hub")
    make_key(keys / "site-a")
    hub = root / "hub"
    assert (
        cli(
            "hub",
            "init",
            hub,
            "--federation",
            "fed",
            "--model",
            model,
            "--classes",
            DIGITS,
            "--input-shape",
            "1,8,8",
            "--key",
            keys / "hub",
            "--local-epochs",
            epochs,
            "--batch-size",
            "16",
        ).code
        == 0
    )
    from tests.conftest import fingerprint

    assert (
        cli(
            "hub",
            "enroll",
            hub,
            "site-a",
            keys / "site-a.pub",
            "--fingerprint",
            fingerprint(keys / "site-a.pub"),
        ).code
        == 0
    )
    assert cli("hub", "kit", hub, "site-a", "--out", root / "kit").code == 0
    return hub, keys


def test_train_writes_a_signed_bundle_and_reports(federation: Federation, cli) -> None:
    bundle = federation.bundles["site-a"]
    assert bundle.exists() and Path(f"{bundle}.sig").exists()
    report = json.loads(cli("inspect", bundle, "--json").out)["manifest"]
    assert (
        report["bundle"]["num_samples"] == 270
        and report["bundle"]["metrics_trained"]["samples"] == 30
    )
    assert (
        report["bundle"]["base_package_sha256"]
        == scan_file(federation.sites["site-a"] / "packages" / "fed-r0000.safetensors").sha256
    )
    again = cli(
        "train",
        federation.sites["site-a"] / "packages" / "fed-r0000.safetensors",
        "--site",
        federation.sites["site-a"],
    )
    assert again.code == 2 and "already-trained" in again.err


def _site(root: Path, cli, keys: Path, data: Path) -> Path:
    site = root / "site"
    assert (
        cli(
            "site",
            "init",
            site,
            "--kit",
            root / "kit",
            "--site-id",
            "site-a",
            "--key",
            keys / "site-a",
            "--hub-fingerprint",
            fingerprint(keys / "hub.pub"),
            "--data",
            data,
        ).code
        == 0
    )
    return site


def test_interrupted_training_resumes_to_the_same_bundle(tmp_path: Path, cli, monkeypatch) -> None:
    from tests.conftest import digits_npz

    hub, keys = new_hub(tmp_path, cli, epochs=3, model="mlp:hidden=32")
    data = digits_npz(tmp_path / "d.npz", np.arange(200))
    straight = _site(tmp_path, cli, keys, data)
    package = straight / "packages" / "fed-r0000.safetensors"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    assert cli("train", package, "--site", straight, "--device", "cpu").code == 0

    resumed = tmp_path / "site2"
    assert (
        cli(
            "site",
            "init",
            resumed,
            "--kit",
            tmp_path / "kit",
            "--site-id",
            "site-a",
            "--key",
            keys / "site-a",
            "--hub-fingerprint",
            fingerprint(keys / "hub.pub"),
            "--data",
            data,
        ).code
        == 0
    )
    import site_kit.training as training

    real_save = training.Checkpoint.save
    calls = {"n": 0}

    def save_then_die(self, epoch, *args, **kwargs):  # killed right after epoch 1 is on disk
        real_save(self, epoch, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training.Checkpoint, "save", save_then_die)
    first = cli(
        "train",
        resumed / "packages" / "fed-r0000.safetensors",
        "--site",
        resumed,
        "--device",
        "cpu",
    )
    assert first.code == 130
    assert not list((resumed / "outbox").glob("*.safetensors"))
    monkeypatch.setattr(training.Checkpoint, "save", real_save)
    second = cli(
        "train",
        resumed / "packages" / "fed-r0000.safetensors",
        "--site",
        resumed,
        "--device",
        "cpu",
        "--json",
    )
    assert second.code == 0, second.err
    doc = json.loads(second.out)
    assert doc["resumed_from_epoch"] == 1 and doc["epochs_run"] == 2
    a = straight / "outbox" / "fed-r0000-site-a.safetensors"
    b = resumed / "outbox" / "fed-r0000-site-a.safetensors"
    assert data_digest(a) == data_digest(b)  # resumed weights are bit-identical


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun(tmp_path: Path, cli) -> None:
    from tests.conftest import digits_npz

    hub, keys = new_hub(tmp_path, cli, epochs=40, model="mlp:hidden=256x256")
    site = _site(tmp_path, cli, keys, digits_npz(tmp_path / "d.npz", np.arange(1500)))
    cmd = [
        sys.executable,
        "-m",
        "flsilo",
        "train",
        str(site / "packages" / "fed-r0000.safetensors"),
        "--site",
        str(site),
        "--device",
        "cpu",
        "--json",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    checkpoint = next(iter([site / "work"]))
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoint.glob("*/checkpoint.safetensors")):
        time.sleep(0.05)
    assert list(checkpoint.glob("*/checkpoint.safetensors")), proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["resumed_from_epoch"] >= 1


def test_rollback_and_forks_are_refused(
    federation_template: Federation, tmp_path: Path, cli
) -> None:
    fed = federation_template.copy(tmp_path / "fed")
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    site = fed.sites["site-a"]
    for suffix in ("", ".sig"):
        shutil.copy(fed.hub / "packages" / f"fed-r0001.safetensors{suffix}", site / "packages")
    assert cli("train", site / "packages" / "fed-r0001.safetensors", "--site", site).code == 0
    before = tree_digest(site)
    old = cli("train", site / "packages" / "fed-r0000.safetensors", "--site", site)
    assert old.code == 3 and "rollback" in old.err
    assert tree_digest(site) == before


def test_package_from_another_hub_is_refused(federation: Federation, tmp_path: Path, cli) -> None:
    package = another_hubs_package(cli, tmp_path)
    result = cli("train", package, "--site", federation.sites["site-a"])
    assert result.code == 3 and "unknown-signer" in result.err


@pytest.mark.parametrize(
    "change, code",
    [("model", "model-code-mismatch"), ("federation", "wrong-federation")],
)
def test_hub_signed_but_unfit_packages_are_refused(
    federation: Federation, cli, change: str, code: str
) -> None:
    from flsilo.format.artifact import write_artifact
    from flsilo.signing.keys import load_private_key

    package = federation.hub / "packages" / "fed-r0000.safetensors"
    scan = scan_file(package)
    data = bytearray(package.read_bytes()[scan.header.data_start :])
    m = scan.manifest
    changes: dict = {
        "round": 1,
        "package": mf.PackageInfo(**{**m.package.__dict__, "parent_sha256": "cd" * 32}),
    }
    if change == "model":
        changes["model"] = mf.ModelInfo(**{**m.model.__dict__, "code_digest": "ab" * 32})
    else:
        changes["federation"] = "other-fed"
    forged = mf.Manifest(**{**m.__dict__, **changes})
    target = federation.root / "forged" / "fed-r0001.safetensors"
    target.parent.mkdir()
    write_artifact(
        target,
        _tensors_of(scan.header, data),
        forged,
        load_private_key(federation.keys / "hub", lambda _p: b""),
    )
    result = cli("train", target, "--site", federation.sites["site-a"])
    assert result.code == 3 and code in result.err


def _images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for digit in "0123456789":
        (root / digit).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(
                root / digit / f"{i}.png"
            )
    return root


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("label," + ",".join(f"p{i}" for i in range(64)) + "\n" + "\n".join(rows) + "\n")
    return path


GOOD_ROW = "3," + ",".join(["0.5"] * 64)


def _bad_data_cases():
    def unknown_label_folder(root: Path) -> tuple[Path, str]:
        d = _images(root / "img")
        (d / "eleven").mkdir()
        return d, "eleven"

    def corrupt_image(root: Path) -> tuple[Path, str]:
        d = _images(root / "img")
        (d / "4" / "broken.png").write_bytes(b"\x89PNG not really")
        return d, "broken.png"

    def missing_column(root: Path) -> tuple[Path, str]:
        p = root / "t.csv"
        p.write_text("label,p0\n3,0.1\n")
        return p, "t.csv"

    def non_numeric(root: Path) -> tuple[Path, str]:
        return _csv(root / "n.csv", [GOOD_ROW, "3," + ",".join(["0.5"] * 63 + ["oops"])]), "n.csv:3"

    def unknown_label_row(root: Path) -> tuple[Path, str]:
        return _csv(root / "u.csv", [GOOD_ROW, "cat," + ",".join(["0.5"] * 64)]), "u.csv:3"

    def wrong_shape(root: Path) -> tuple[Path, str]:
        p = root / "w.npz"
        np.savez(p, x=np.zeros((5, 7), np.float32), y=np.zeros(5, np.int64))
        return p, "w.npz"

    def empty(root: Path) -> tuple[Path, str]:
        d = root / "empty"
        for digit in "0123456789":
            (d / digit).mkdir(parents=True)
        return d, "empty"

    def pickled_npz(root: Path) -> tuple[Path, str]:
        p = root / "p.npz"
        np.savez(p, x=np.array([object()], dtype=object), y=np.zeros(1))
        return p, "p.npz"

    return [
        ("unknown class folder", unknown_label_folder, True),
        ("corrupt image", corrupt_image, True),
        ("missing column", missing_column, False),
        ("non-numeric cell", non_numeric, True),
        ("unknown label", unknown_label_row, True),
        ("wrong shape", wrong_shape, False),
        ("empty dataset", empty, False),
        ("object array (pickle)", pickled_npz, False),
    ]


@pytest.mark.parametrize(
    "make, skippable", [pytest.param(*c[1:], id=c[0]) for c in _bad_data_cases()]
)
def test_bad_data_is_one_clear_line(
    federation: Federation, tmp_path: Path, cli, make, skippable
) -> None:
    data, where = make(tmp_path)
    site = federation.sites["site-b"]
    (site / "outbox" / "fed-r0000-site-b.safetensors").unlink()
    Path(f"{site / 'outbox' / 'fed-r0000-site-b.safetensors'}.sig").unlink()
    before = tree_digest(tmp_path)
    result = cli(
        "train", site / "packages" / "fed-r0000.safetensors", "--site", site, "--data", data
    )
    assert result.code == 4, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and "hint:" in lines[0]
    assert tree_digest(tmp_path) == before
    if skippable:
        ok = cli(
            "train",
            site / "packages" / "fed-r0000.safetensors",
            "--site",
            site,
            "--data",
            data,
            "--skip-bad",
            "--json",
        )
        assert ok.code == 0, ok.err
        assert json.loads(ok.out)["skipped"] >= 1


def test_evaluate_reports_per_class_and_confusion(federation: Federation, cli) -> None:
    result = cli(
        "evaluate",
        federation.hub / "packages" / "fed-r0000.safetensors",
        "--data",
        federation.data["site-a"],
        "--site",
        federation.sites["site-a"],
        "--json",
    )
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert (
        doc["samples"] == 300
        and len(doc["confusion"]) == 10
        and len(doc["per_class_accuracy"]) == 10
    )
    assert sum(map(sum, doc["confusion"])) == 300
    row = doc["per_class"]["3"]  # the metrics clinicians use, per class, with intervals
    assert {"sensitivity", "specificity", "auroc", "ap", "ci95"} <= set(row)
    assert 0 <= doc["balanced_accuracy"] <= 1 and doc["ece"] >= 0
    # the table needs no more than a few samples (each per-class interval is a bootstrap)
    few = digits_npz(federation.root / "few.npz", np.arange(30))
    table = cli(
        "evaluate",
        federation.hub / "packages" / "fed-r0000.safetensors",
        "--data",
        few,
        "--site",
        federation.sites["site-a"],
    )
    assert table.code == 0 and "true \\ predicted" in table.out  # rows true, columns predicted
    assert "on 30 samples" in " ".join(table.out.split())
    unsigned = cli(
        "evaluate",
        federation.hub / "packages" / "fed-r0000.safetensors",
        "--data",
        federation.data["site-a"],
        "--key",
        federation.keys / "site-a.pub",
    )
    assert unsigned.code == 3


@pytest.mark.slow
def test_torchrun_two_cpu_processes_make_one_bundle(tmp_path: Path, cli) -> None:
    from tests.conftest import digits_npz

    hub, keys = new_hub(tmp_path, cli, epochs=2, model="mlp:hidden=32")
    site = _site(tmp_path, cli, keys, digits_npz(tmp_path / "d.npz", np.arange(201)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    import socket

    with socket.socket() as probe:  # a free port: other runs on this machine may hold a fixed one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(port),
            "-m",
            "flsilo",
            "train",
            str(site / "packages" / "fed-r0000.safetensors"),
            "--site",
            str(site),
            "--device",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    bundles = list((site / "outbox").glob("*.safetensors"))
    assert len(bundles) == 1
    m = scan_file(bundles[0]).manifest
    assert m.bundle is not None and m.bundle.world_size == 2
    assert m.bundle.num_samples == 181  # the whole site's training split, not one rank's share
    assert cli("verify", bundles[0], "--key", keys / "site-a.pub").code == 0
