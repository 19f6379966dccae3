"""A DICOM federation and a video federation trained end to end through real files.

hub init (the plan's DICOM window or frame sampling), enroll, kit, site init with
``--data-format dicom|video``, check-data, train, carry, aggregate, audit --replay, and
evaluate; bad files in each format are one line with a code and a hint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import fingerprint, make_key
from tests.media import av_or_skip, pydicom_or_skip, write_clip, write_dicom

JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"


def federation(cli, root: Path, classes: str, shape: str, *plan: str) -> tuple[Path, Path]:
    """A hub for two sites (``site-a``, ``site-b``): the hub folder and the keys folder."""
    keys = root / "keys"
    for name in ("hub", "site-a", "site-b"):
        make_key(keys / name)
    hub = root / "hub"
    res = cli(
        "hub", "init", hub, "--federation", "fed", "--model", "logreg", "--classes", classes,
        "--input-shape", shape, "--key", keys / "hub", "--schedule", "periodic:2",
        "--local-epochs", "2", "--batch-size", "4", "--lr", "0.5", "--min-sites", "2", *plan,
    )  # fmt: skip
    assert res.code == 0, res.err
    return hub, keys


def join(cli, root: Path, hub: Path, keys: Path, site: str, data: Path, fmt: str) -> Path:
    pub = keys / f"{site}.pub"
    assert cli("hub", "enroll", hub, site, pub, "--fingerprint", fingerprint(pub)).code == 0
    kit = root / f"kit-{site}"
    assert cli("hub", "kit", hub, site, "--out", kit).code == 0
    site_dir = root / site
    res = cli(
        "site", "init", site_dir, "--kit", kit, "--site-id", site, "--key", keys / site,
        "--hub-fingerprint", fingerprint(keys / "hub.pub"), "--data", data, "--data-format", fmt,
    )  # fmt: skip
    assert res.code == 0, res.err
    return site_dir


def train_and_carry(cli, hub: Path, site_dir: Path, *extra: str) -> dict:
    package = site_dir / "packages" / "fed-r0000.safetensors"
    res = cli("train", package, "--site", site_dir, "--device", "cpu", "--json", *extra)
    assert res.code == 0, res.err
    for bundle in (site_dir / "outbox").glob("fed-r0000-*.safetensors*"):
        (hub / "inbox" / bundle.name).write_bytes(bundle.read_bytes())
    return json.loads(res.out)


def aggregate_and_replay(cli, hub: Path, keys: Path) -> None:
    res = cli("aggregate", hub, "--json")
    assert res.code == 0, res.err
    assert (hub / "packages" / "fed-r0001.safetensors").is_file()
    audit = cli("audit", hub, "--replay", "--hub-fingerprint", fingerprint(keys / "hub.pub"))
    assert audit.code == 0, audit.out + audit.err


def cxr(value: int, *, inverted: bool = False) -> np.ndarray:
    """An 16x16 '16-bit X-ray': a bright disc (effusion) or none, stored as the scanner would."""
    yy, xx = np.mgrid[:16, :16]
    image = np.full((16, 16), 800, dtype=np.int64)
    image[(yy - 8) ** 2 + (xx - 8) ** 2 < 20] += value
    image += (yy * 7 + xx * 3) % 50  # texture
    return (4095 - image if inverted else image).astype(np.uint16)


def test_dicom_federation_end_to_end(cli, tmp_path: Path) -> None:
    pydicom_or_skip()
    hub, keys = federation(
        cli, tmp_path, "normal,effusion", "1,16,16", "--intensity", "dicom", "--window", "file",
        "--frames-per-clip", "2",
    )  # fmt: skip
    # site-a: a folder per class, 16-bit MONOCHROME2 with a CT-style rescale and window
    a = tmp_path / "data-a"
    for k in range(6):
        for label, value in (("normal", 0), ("effusion", 1500)):
            write_dicom(a / label / f"IM{k:04d}", cxr(value + 10 * k), RescaleSlope=1,
                        RescaleIntercept=-1024, WindowCenter=300, WindowWidth=2000)  # fmt: skip
    # site-b: a manifest; MONOCHROME1 (stored inverted), a multi-frame file, and a file
    # compressed in a syntax no installed decoder reads
    b = tmp_path / "data-b"
    rows = ["path,label"]
    for k in range(5):
        for label, value in (("normal", 0), ("effusion", 1500)):
            name = f"scans/{label}-{k}.dcm"
            write_dicom(b / name, cxr(value + 10 * k, inverted=True), photometric="MONOCHROME1",
                        WindowCenter=4095 - 1100, WindowWidth=2000)  # fmt: skip
            rows.append(f"{name},{label}")
    cine = np.stack([cxr(1500 + 5 * f, inverted=True) for f in range(6)])
    write_dicom(b / "scans" / "cine.dcm", cine, frames=6, photometric="MONOCHROME1",
                WindowCenter=4095 - 1100, WindowWidth=2000)  # fmt: skip
    write_dicom(b / "scans" / "jpeg.dcm", cxr(0), syntax=JPEG_LOSSLESS)
    rows += ["scans/cine.dcm,effusion", "scans/jpeg.dcm,normal"]
    (b / "labels.csv").write_text("\n".join(rows) + "\n")

    site_a = join(cli, tmp_path, hub, keys, "site-a", a, "dicom")
    site_b = join(cli, tmp_path, hub, keys, "site-b", b / "labels.csv", "dicom")

    check = cli("site", "check-data", site_b)
    assert check.code == 4
    assert "12 usable samples" in check.out  # 10 files, 2 frames of the cine
    assert "frames: scans/cine.dcm (effusion): 2 frames, frame=2 .. frame=5" in check.out
    assert "jpeg.dcm" in check.out and "pip install python-gdcm" in check.out

    refused = cli("train", site_b / "packages" / "fed-r0000.safetensors", "--site", site_b)
    assert refused.code == 4
    assert refused.err.count("\n") == 1 and "error[bad-record]" in refused.err
    assert "jpeg.dcm" in refused.err and "--skip-bad" in refused.err
    assert list((site_b / "outbox").glob("*.safetensors")) == []

    report_a = train_and_carry(cli, hub, site_a, "--cache", tmp_path / "cache")
    report_b = train_and_carry(cli, hub, site_b, "--skip-bad")
    assert any((tmp_path / "cache").iterdir())  # the decoded, windowed images kept
    assert report_a["train_samples"] + report_a["val_samples"] == 12
    assert report_b["train_samples"] + report_b["val_samples"] == 12
    assert report_b["skipped"] == 1
    aggregate_and_replay(cli, hub, keys)

    res = cli(
        "evaluate",
        hub / "packages" / "fed-r0001.safetensors",
        "--site",
        site_a,
        "--data",
        a,
        "--json",
    )  # fmt: skip  (the plan's DICOM intensity: a DICOM folder)
    assert res.code == 0, res.err
    assert json.loads(res.out)["accuracy"] >= 0.9


def test_video_federation_end_to_end(cli, tmp_path: Path) -> None:
    av_or_skip()
    hub, keys = federation(cli, tmp_path, "empty,vehicle", "3,16,16", "--frame-rate", "4")
    # site-a: a folder per class of clips; frames 0-15 are dark (empty), 200+ bright (vehicle)
    a = tmp_path / "data-a"
    for k in range(2):
        write_clip(a / "empty" / f"cam{k}.mp4", 50, first=0, size=(32, 48))
        write_clip(a / "vehicle" / f"cam{k}.mp4", 50, first=200, size=(32, 48))
    # site-b: one recording, labelled intervals in a manifest, and bad rows
    b = tmp_path / "data-b"
    write_clip(b / "nvr" / "gate.mp4", 25, first=0, size=(32, 48))
    write_clip(b / "nvr" / "lane.mp4", 25, first=220, size=(32, 48))
    (b / "intervals.csv").write_text(
        "file,start_s,end_s,label\n"
        "nvr/gate.mp4,0,1,empty\n"
        "nvr/lane.mp4,0,1,vehicle\n"
        "nvr/gate.mp4,0.5,3,empty\n"
        "nvr/lane.mp4,0.8,0.2,vehicle\n"
    )
    site_a = join(cli, tmp_path, hub, keys, "site-a", a, "video")
    site_b = join(cli, tmp_path, hub, keys, "site-b", b / "intervals.csv", "video")

    check = cli("site", "check-data", site_a, "--json")
    assert check.code == 0, check.err
    report = json.loads(check.out)
    assert report["usable"] == 32  # 4 clips of 2 s at 4 frames a second
    assert report["samples"][:2] == [
        {"source": "empty/cam0.mp4", "frame": "t=0.000", "label": "empty"},
        {"source": "empty/cam0.mp4", "frame": "t=0.250", "label": "empty"},
    ]

    for given in ((), ("--data", b / "intervals.csv")):  # a manifest of intervals is video
        check = cli("site", "check-data", site_b, *given)
        assert check.code == 4
        assert "8 usable samples" in check.out
    assert "frames: nvr/gate.mp4 (empty): 4 frames, t=0.000 .. t=0.750" in check.out
    assert f"{b / 'intervals.csv'}:4" in check.out and "after the clip (1 s long)" in check.out
    assert f"{b / 'intervals.csv'}:5" in check.out and "before it starts" in check.out

    train_and_carry(cli, hub, site_a, "--cache", tmp_path / "cache")
    report_b = train_and_carry(cli, hub, site_b, "--skip-bad")
    assert report_b["skipped"] == 2
    assert any((tmp_path / "cache").iterdir())
    aggregate_and_replay(cli, hub, keys)


def test_video_in_a_plan_without_frame_sampling_is_one_line(cli, tmp_path: Path) -> None:
    av_or_skip()
    hub, keys = federation(cli, tmp_path, "empty,vehicle", "3,16,16")
    write_clip(tmp_path / "data" / "empty" / "a.mp4", 10)
    site = join(cli, tmp_path, hub, keys, "site-a", tmp_path / "data", "video")
    res = cli("site", "check-data", site)
    assert res.code == 2
    assert res.err.count("\n") == 1
    assert "error[video-sampling]" in res.err and "--frame-rate" in res.err


@pytest.mark.parametrize(("fmt", "module"), [("dicom", "pydicom"), ("video", "av")])
def test_a_missing_extra_is_one_line_naming_it(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, module: str
) -> None:
    hub, keys = federation(cli, tmp_path, "empty,vehicle", "3,16,16", "--frames-per-clip", "1")
    (tmp_path / "data" / "empty").mkdir(parents=True)
    site = join(cli, tmp_path, hub, keys, "site-a", tmp_path / "data", fmt)
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    res = cli("train", site / "packages" / "fed-r0000.safetensors", "--site", site)
    assert res.code == 2
    assert res.err.count("\n") == 1
    assert f"error[{fmt}-extra]" in res.err and f"flsilo[{fmt}]" in res.err
    assert list((site / "outbox").iterdir()) == []
