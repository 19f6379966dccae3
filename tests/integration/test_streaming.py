"""Streaming input through the CLI: worker counts, the images-csv manifest, the stored index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsilo.format.artifact import scan_file
from flsilo.format.manifest import to_jsonable
from tests.conftest import fingerprint, make_key

CLASSES = ("cat", "dog", "fox")


def _images(root: Path, per_class: int = 10, size: tuple[int, int] = (14, 12)) -> Path:
    rng = np.random.default_rng(3)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (*size, 3), dtype=np.uint8) + 60 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:02d}.png")
    return root


def _hub(root: Path, cli, *extra: object) -> Path:
    keys = root / "keys"
    make_key(keys / "hub")
    make_key(keys / "site-a")
    hub = root / "hub"
    created = cli(
        "hub", "init", hub, "--federation", "fed", "--model", "cnn", "--classes",
        ",".join(CLASSES), "--input-shape", "3,12,12", "--key", keys / "hub",
        "--local-epochs", "2", "--batch-size", "8", *extra,
    )  # fmt: skip
    assert created.code == 0, created.err
    pub = keys / "site-a.pub"
    assert cli("hub", "enroll", hub, "site-a", pub, "--fingerprint", fingerprint(pub)).code == 0
    assert cli("hub", "kit", hub, "site-a", "--out", root / "kit").code == 0
    return keys


def _site(root: Path, cli, name: str, data: Path, *extra: object) -> Path:
    site = root / name
    made = cli(
        "site", "init", site, "--kit", root / "kit", "--site-id", "site-a", "--key",
        root / "keys" / "site-a", "--hub-fingerprint", fingerprint(root / "keys" / "hub.pub"),
        "--data", data, *extra,
    )  # fmt: skip
    assert made.code == 0, made.err
    return site


def _train(cli, site: Path, *extra: object) -> dict:
    result = cli(
        "train", site / "packages" / "fed-r0000.safetensors", "--site", site, "--device", "cpu",
        "--json", *extra,
    )  # fmt: skip
    assert result.code == 0, result.err
    return json.loads(result.out)


def _bundle_bytes(site: Path) -> tuple[str, dict]:
    """The tensors' sha256 and the manifest without its timings (seconds differ per run)."""
    path = site / "outbox" / "fed-r0000-site-a.safetensors"
    scan = scan_file(path)
    with path.open("rb") as fh:
        fh.seek(scan.header.data_start)
        tensors = hashlib.sha256(fh.read()).hexdigest()
    manifest = to_jsonable(scan.manifest)
    manifest["bundle"].pop("timings")
    return tensors, manifest


def test_a_manifest_of_the_same_files_trains_the_same_bundle(
    tmp_path: Path, cli, monkeypatch
) -> None:
    """The default tier's part of the slow test below: a folder and an images-csv manifest
    of the same files train the same weights, decoded in process (``--workers 0``, kept in
    the record). That worker processes change no batch is checked where batches are made
    (tests/unit/test_data_stream.py), and no bit of a bundle in the slow tier."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    _hub(tmp_path, cli, "--augment", "hflip,crop:0.7,rotate:10,jitter:0.2,noise:0.02",
         "--normalize", "imagenet", "--resize", "letterbox")  # fmt: skip
    data = _images(tmp_path / "images")
    folder = _site(tmp_path, cli, "site-folder", data)
    report = _train(cli, folder, "--workers", 0)
    assert report["train_samples"] == 27 and report["val_samples"] == 3
    trained = [e for e in _record(folder) if e["event"] == "trained"][-1]
    assert trained["overrides"]["workers"] == 0
    csv = data / "labels.csv"
    rows = [f"{name}/{i:02d}.png,{name}" for name in CLASSES for i in range(10)]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    site = _site(tmp_path, cli, "site-csv", csv)
    _train(cli, site, "--workers", 0)
    assert _bundle_bytes(site)[0] == _bundle_bytes(folder)[0]


@pytest.mark.slow
def test_bundles_are_bit_identical_with_0_1_and_2_workers(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    _hub(tmp_path, cli, "--augment", "hflip,crop:0.7,rotate:10,jitter:0.2,noise:0.02",
         "--normalize", "imagenet", "--resize", "letterbox")  # fmt: skip
    data = _images(tmp_path / "images")
    bundles = {}
    for workers in (0, 1, 2):
        site = _site(tmp_path, cli, f"site-w{workers}", data)
        report = _train(cli, site, "--workers", workers)
        assert report["train_samples"] == 27 and report["val_samples"] == 3
        bundles[workers] = _bundle_bytes(site)
        trained = [e for e in _record(site) if e["event"] == "trained"][-1]
        assert trained["overrides"]["workers"] == workers
    assert bundles[0] == bundles[1] == bundles[2]

    # the same files listed in a manifest, in the same order, train the same weights
    csv = data / "labels.csv"
    rows = [f"{name}/{i:02d}.png,{name}" for name in CLASSES for i in range(10)]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    site = _site(tmp_path, cli, "site-csv", csv)
    _train(cli, site, "--workers", 1)
    assert _bundle_bytes(site)[0] == bundles[0][0]


def _record(site: Path) -> list[dict]:
    return [json.loads(line) for line in (site / "record.jsonl").read_text().splitlines()]


def test_the_index_is_kept_in_the_site_and_its_digest_recorded(tmp_path: Path, cli) -> None:
    _hub(tmp_path, cli)
    data = _images(tmp_path / "images", per_class=4)
    site = _site(tmp_path, cli, "site", data)
    check = cli("site", "check-data", site, "--json")
    assert check.code == 0, check.err
    (index,) = (site / "index").glob("*.json")
    stored = json.loads(index.read_text())
    assert len(stored["records"]) == 12 and stored["bad"] == []
    before = index.stat().st_mtime_ns
    _train(cli, site, "--workers", 0)
    assert index.stat().st_mtime_ns == before  # nothing changed: the index is not rewritten
    digest = [e for e in _record(site) if e["event"] == "trained"][-1]["data_sha256_salted"]
    assert len(digest) == 64

    (data / "dog" / "junk.png").write_bytes(b"not an image")
    found = cli("site", "check-data", site, "--json")
    problems = json.loads(found.out)["problems"]
    assert len(problems) == 1 and "junk.png: cannot decode image" in problems[0]
    assert len(json.loads(index.read_text())["bad"]) == 1


@pytest.mark.parametrize("workers", ["-1"])
def test_negative_workers_is_a_usage_error(tmp_path: Path, cli, workers: str) -> None:
    _hub(tmp_path, cli)
    site = _site(tmp_path, cli, "site", _images(tmp_path / "images", per_class=2))
    result = cli("train", site / "packages" / "fed-r0000.safetensors", "--site", site,
                 "--workers", workers)  # fmt: skip
    assert result.code == 2 and "--workers" in result.err


# The default tier keeps its parts: resuming to the same bundle (test_site), workers that
# change no bit (above) and augmentation drawn per sample and epoch (test_data_stream).
@pytest.mark.slow
def test_a_run_killed_after_an_epoch_resumes_to_the_same_bundle(
    tmp_path: Path, cli, monkeypatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    _hub(tmp_path, cli, "--augment", "hflip,noise:0.05")
    data = _images(tmp_path / "images", per_class=6)
    straight = _site(tmp_path, cli, "straight", data)
    _train(cli, straight, "--workers", 1)

    import site_kit.training as training

    real_save = training.Checkpoint.save

    def save_then_die(self, epoch, *args, **kwargs):  # killed right after epoch 1 is on disk
        real_save(self, epoch, *args, **kwargs)
        raise KeyboardInterrupt

    resumed = _site(tmp_path, cli, "resumed", data)
    monkeypatch.setattr(training.Checkpoint, "save", save_then_die)
    package = resumed / "packages" / "fed-r0000.safetensors"
    first = cli("train", package, "--site", resumed, "--device", "cpu", "--workers", 2)
    assert first.code == 130
    monkeypatch.setattr(training.Checkpoint, "save", real_save)
    report = _train(cli, resumed, "--workers", 2)
    assert report["resumed_from_epoch"] == 1 and report["epochs_run"] == 1
    assert _bundle_bytes(resumed) == _bundle_bytes(straight)


@pytest.mark.slow
def test_torchrun_ranks_stream_their_share_of_the_index(tmp_path: Path, cli) -> None:
    import os
    import socket
    import subprocess
    import sys

    _hub(tmp_path, cli)
    site = _site(tmp_path, cli, "site", _images(tmp_path / "images", per_class=7))
    with socket.socket() as probe:  # a free port: other runs on this machine may hold a fixed one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(port), "-m", "flsilo", "train",
         str(site / "packages" / "fed-r0000.safetensors"), "--site", str(site), "--device",
         "cpu", "--workers", "1", "--json"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (bundle,) = (site / "outbox").glob("*.safetensors")
    m = scan_file(bundle).manifest
    assert m.bundle is not None and m.bundle.world_size == 2 and m.bundle.num_samples == 19
    assert len(list((site / "index").glob("*.json"))) == 1


def _cached_bundles(tmp_path: Path, cli, monkeypatch, workers: tuple[int, ...]) -> list:
    """The bundle trained without a cache, then one per worker count with a shared cache."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    _hub(tmp_path, cli, "--augment", "hflip,jitter:0.1")
    data = _images(tmp_path / "images", per_class=5, size=(12, 12))  # at the input size
    plain = _site(tmp_path, cli, "plain", data)
    _train(cli, plain, "--workers", 0)
    bundles = [_bundle_bytes(plain)]
    for count in workers:
        site = _site(tmp_path, cli, f"cached-{count}", data)
        _train(cli, site, "--workers", count, "--cache", tmp_path / "cache")
        bundles.append(_bundle_bytes(site))
        trained = [e for e in _record(site) if e["event"] == "trained"][-1]
        assert trained["overrides"]["cache"] == str(tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 1
    return bundles


def test_a_cache_of_decoded_images_trains_the_same_bundle(tmp_path: Path, cli, monkeypatch) -> None:
    """The default tier's part of the slow test below: a cache built and read in process
    trains the bundle of a run without it. Workers that build the same cache are checked
    in tests/unit/test_data_cache.py; no DataLoader worker is forked here (a fork of the
    test process and its heap costs more than this training)."""
    plain, cached = _cached_bundles(tmp_path, cli, monkeypatch, (0,))
    assert cached == plain


@pytest.mark.slow
def test_a_cache_read_in_process_and_by_two_workers_trains_the_same_bundle(
    tmp_path: Path, cli, monkeypatch
) -> None:
    plain, in_process, two_workers = _cached_bundles(tmp_path, cli, monkeypatch, (0, 2))
    assert in_process == two_workers == plain
