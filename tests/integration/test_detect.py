"""``--task detect`` through the real files: hub init, train on YOLO and COCO data,
aggregate, evaluate (``map50``), audit --replay; and bad labels named line by line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flsilo.cli.app import run
from sim_kit.scenes import SHAPES, write_scenes
from tests.conftest import Federation, fingerprint, hub_root, make_key, tree_digest

SHAPE = "3,32,32"


def scenes(path: Path, n: int, seed: int, camera: str = "even", size: int = 32) -> Path:
    return write_scenes(path, n, seed=seed, camera=camera, size=size)


def detect_federation(
    root: Path, model: str = "detector:width=8", *extra: str, data_format: str = "yolo",
    shape: str = SHAPE, size: int = 32, train: bool = True,
) -> Federation:  # fmt: skip
    """A hub with two enrolled sites (YOLO or COCO scenes) that have each trained round 0
    (or, with ``train=False``, are ready to)."""
    root.mkdir(parents=True)
    keys = root / "keys"
    for name in ("hub", "site-a", "site-b"):
        make_key(keys / name)
    hub = root / "hub"
    init = ["hub", "init", str(hub), "--federation", "fed", "--task", "detect",
            "--model", model, "--classes", ",".join(SHAPES), "--input-shape", shape,
            "--key", str(keys / "hub"), "--schedule", "periodic:2", "--local-epochs", "1",
            "--batch-size", "8", "--optimizer", "adam", "--lr", "0.003", "--min-sites", "2",
            *extra]  # fmt: skip
    assert run(init) == 0
    data, sites, bundles = {}, {}, {}
    for seed, (site, camera) in enumerate((("site-a", "street"), ("site-b", "yard"))):
        folder = write_scenes(root / f"data-{site}", 12, seed=seed, camera=camera, size=size,
                              coco=data_format == "coco")  # fmt: skip
        data[site] = folder / "annotations.json" if data_format == "coco" else folder
        pub = keys / f"{site}.pub"
        assert (
            run(["hub", "enroll", str(hub), site, str(pub), "--fingerprint", fingerprint(pub)]) == 0
        )
        kit = root / f"kit-{site}"
        assert run(["hub", "kit", str(hub), site, "--out", str(kit)]) == 0
        sites[site] = root / site
        assert run(["site", "init", str(sites[site]), "--kit", str(kit), "--site-id", site,
                    "--key", str(keys / site), "--hub-fingerprint", fingerprint(keys / "hub.pub"),
                    "--data", str(data[site]), "--data-format", data_format]) == 0  # fmt: skip
        package = sites[site] / "packages" / "fed-r0000.safetensors"
        if train:
            assert run(["train", str(package), "--site", str(sites[site]), "--device", "cpu"]) == 0
        bundles[site] = sites[site] / "outbox" / f"fed-r0000-{site}.safetensors"
    return Federation(root, hub, keys, sites, bundles, data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return detect_federation(tmp_path_factory.mktemp("detect") / "fed")


def test_detect_round_through_the_real_files(trained: Federation, tmp_path: Path, cli) -> None:
    fed = trained.copy(tmp_path / "fed")
    assert 'task = "detect"' in (fed.hub / "federation.toml").read_text()
    fed.carry()
    result = cli("aggregate", fed.hub, "--strategy", "median", "--json")
    assert result.code == 0, result.err
    done = json.loads(result.out)["report"]
    assert done["metric"] == "map50" and all(
        0 <= row["trained_primary"] <= 1 for row in done["rows"]
    )  # the sites' mAP@0.5, not their exact-image share
    package = fed.hub / "packages" / "fed-r0001.safetensors"
    assert package.exists()
    trained = cli("train", package, "--site", fed.sites["site-a"], "--device", "cpu")
    assert trained.code == 0, trained.err  # the validation line names the mAP, as a number
    assert re.search(r"global model mAP@0\.5\s+\d\.\d{3}\s+\(loss\s", trained.err), trained.err
    assert "accuracy" not in trained.err
    test = scenes(tmp_path / "test", 6, seed=9)
    result = cli(
        "evaluate", package, "--hub", fed.hub, "--data", test, "--data-format", "yolo", "--json"
    )
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert 0.0 <= report["map50"] <= 1.0 and 0.0 <= report["map"] <= report["map50"]
    assert report["samples"] == 6
    shown = cli("evaluate", package, "--hub", fed.hub, "--data", test, "--data-format", "yolo")
    flat = " ".join(shown.out.split())
    assert f"mAP@0.5 {report['map50']:.3f}, mAP@0.5:0.95 {report['map']:.3f}" in flat
    result = cli("audit", fed.hub, *hub_root(fed.hub), "--replay")
    assert result.code == 0, result.err


def test_bad_label_line_is_named_and_nothing_changes(
    trained: Federation, tmp_path: Path, cli
) -> None:
    fed = trained.copy(tmp_path / "fed")
    data = fed.data["site-a"]
    label = sorted((data / "labels").iterdir())[3]
    label.write_text(label.read_text() + "1 0.95 0.5 0.2 0.2\n")
    lines = label.read_text().count("\n")
    before = tree_digest(fed.root)
    package = fed.sites["site-a"] / "packages" / "fed-r0000.safetensors"
    (fed.sites["site-a"] / "outbox" / "fed-r0000-site-a.safetensors").unlink()
    (fed.sites["site-a"] / "outbox" / "fed-r0000-site-a.safetensors.sig").unlink()
    before = tree_digest(fed.root)
    result = cli("train", package, "--site", fed.sites["site-a"], "--device", "cpu")
    assert result.code == 4
    err = result.err.strip().splitlines()
    assert len(err) == 1 and "error[bad-record]" in err[0]
    assert f"{label}:{lines}" in err[0] and "outside the image" in err[0] and "hint:" in err[0]
    assert tree_digest(fed.root) == before
    # an unknown class id and a malformed line: named the same way
    label.write_text("7 0.5 0.5 0.2 0.2\n")
    result = cli("train", package, "--site", fed.sites["site-a"], "--device", "cpu")
    assert result.code == 4 and f"{label}:1" in result.err and "class id 7" in result.err
    label.write_text("0 0.5 0.5\n")
    result = cli("site", "check-data", fed.sites["site-a"], "--json")
    assert result.code != 0 or f"{label}:1" in result.out


def test_coco_manifest_trains(tmp_path: Path, cli) -> None:
    fed = detect_federation(tmp_path / "fed", data_format="coco", train=False)
    site = fed.sites["site-b"]  # one site is enough: the other reads its manifest the same way
    trained = cli("train", site / "packages" / "fed-r0000.safetensors", "--site", site,
                  "--device", "cpu", "--json")  # fmt: skip
    assert trained.code == 0, trained.err
    assert json.loads(trained.out)["train_samples"] > 0 and fed.bundles["site-b"].exists()


def test_video_frames_labelled_per_frame(trained: Federation, tmp_path: Path, cli) -> None:
    """A clip and a COCO manifest naming each frame by its time: evaluated like images."""
    from sim_kit.scenes import write_scene_clip
    from tests.media import av_or_skip

    av_or_skip()
    fed = trained.copy(tmp_path / "fed")
    manifest = write_scene_clip(tmp_path / "clip", 6, seed=3, size=32)
    package = fed.sites["site-a"] / "packages" / "fed-r0000.safetensors"
    result = cli("evaluate", package, "--site", fed.sites["site-a"], "--data", manifest, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["samples"] == 6 and report["objects"] == sum(
        row["objects"] for row in report["per_class"].values()
    )
    document = json.loads(manifest.read_text())
    document["images"][2]["time_s"] = 99.0  # after the clip ends
    manifest.write_text(json.dumps(document))
    result = cli("evaluate", package, "--site", fed.sites["site-a"], "--data", manifest)
    assert result.code == 4 and f"{manifest}: images[2]" in result.err
    assert "time_s 99 is after the clip's end (1.2 s)" in result.err


def test_a_site_signs_a_detection_report_the_hub_tables(
    trained: Federation, tmp_path: Path, cli
) -> None:
    """evaluate --report on detection: the signed report carries mAP and the object counts,
    and the hub's cross-site table reads mAP@0.5 from it."""
    fed = trained.copy(tmp_path / "fed")
    site = fed.sites["site-a"]
    held_out = scenes(tmp_path / "held-out", 6, seed=11)
    result = cli(
        "evaluate", site / "packages" / "fed-r0000.safetensors", "--site", site,
        "--data", held_out, "--data-format", "yolo", "--report", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    path = Path(json.loads(result.out)["report"])
    report = json.loads(path.read_bytes())
    assert report["task"] == "detect" and report["samples"] == 6
    figures = report["metrics"]
    assert 0.0 <= figures["map"] <= figures["map50"] <= 1.0
    assert figures["objects"] == sum(row["objects"] for row in figures["per_class"].values())
    table = cli("hub", "evaluations", fed.hub, "--inbox", path.parent, "--json")
    assert table.code == 0, table.err
    (row,) = json.loads(table.out)["reports"]
    assert row["site"] == "site-a" and row["metrics"]["map50"] == figures["map50"]
    text = cli("hub", "evaluations", fed.hub, "--inbox", path.parent)
    assert text.code == 0 and "mAP@0.5" in text.out


def test_simulate_detection(tmp_path: Path, cli) -> None:
    """simulate --task detect: the sites' rounds and the pooled baseline scored by mAP@0.5."""
    data = scenes(tmp_path / "d", 12, seed=4)
    base = ["simulate", "--task", "detect", "--model", "detector:width=8", "--data", data,
            "--data-format", "yolo", "--classes", ",".join(SHAPES), "--input-shape", SHAPE,
            "--schedule", "periodic:2", "--local-epochs", "1", "--batch-size", "8",
            "--optimizer", "adam", "--lr", "0.003", "--strategy", "median"]  # fmt: skip
    result = cli(*base, "--json")
    assert result.code == 0, result.err
    [run] = json.loads(result.out)["runs"]
    assert len(run["accuracy"]) == 3 and all(0.0 <= a <= 1.0 for a in run["accuracy"])
    assert run["centralized"] is not None and set(run["local_only"]) == {"site-0", "site-1"}


@pytest.mark.parametrize(
    "extra,why",
    [
        (
            ("--augment", "hflip,crop:0.8"),
            "crop and rotate would move objects away from their boxes",
        ),
        (("--augment", "rotate:10"), "crop and rotate would move objects away from their boxes"),
        (("--merge", "fisher"), "--merge fisher applies to classification"),
        (("--schedule", "closed-form"), "has no closed-form head"),
        (("--model", "cnn"), "is not an object detector"),
    ],
)
def test_hub_init_refuses_what_detection_cannot_do(tmp_path: Path, cli, extra, why) -> None:
    key = make_key(tmp_path / "hub")
    base = ["hub", "init", tmp_path / "h", "--federation", "f", "--task", "detect",
            "--model", "detector:width=8", "--classes", "a,b", "--input-shape", SHAPE,
            "--key", key]  # fmt: skip
    result = cli(*base, *extra)
    assert result.code == 2, result.err
    assert why in result.err and "hint:" in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "h").exists()


def test_hub_init_takes_dp_sgd_with_the_built_in_detector(tmp_path: Path, cli) -> None:
    key = make_key(tmp_path / "hub")
    result = cli("hub", "init", tmp_path / "h", "--federation", "f", "--task", "detect",
                 "--model", "detector:width=8", "--classes", "a,b", "--input-shape", SHAPE,
                 "--key", key, "--dp-noise-multiplier", "1.0", "--dp-budget", "3")  # fmt: skip
    assert result.code == 0, result.err
    plan = json.loads(cli("inspect", tmp_path / "h" / "packages" / "f-r0000.safetensors",
                          "--json").out)["manifest"]["package"]["plan"]  # fmt: skip
    assert plan["task"] == "detect" and plan["dp_noise_multiplier"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,rule",
    [((), ("--strategy", "fedavg")), (("--adapters", "lora:r=2"), ("--strategy", "median"))],
)
def test_a_dp_detection_round_through_the_real_files(
    tmp_path: Path, cli, extra: tuple[str, ...], rule: tuple[str, ...]
) -> None:
    """DP-SGD at both sites (Poisson batches, clipped per-image gradients, noise), the
    ledger's spend in each bundle, aggregate (also adapter-only bundles under a robust
    rule), and audit --replay of the whole history."""
    pytest.importorskip("opacus", reason="DP tests need the 'dp' extra (Opacus)")
    fed = detect_federation(tmp_path / "fed", "detector:width=8", "--dp-noise-multiplier",
                            "1.0", "--dp-budget", "50", *extra)  # fmt: skip
    for site, bundle in fed.bundles.items():
        dp = json.loads(cli("inspect", bundle, "--json").out)["manifest"]["bundle"]["dp"]
        assert dp["noise_multiplier"] == 1.0 and dp["rounds"] == 1 and dp["steps"] == 2
        ledger = json.loads((fed.sites[site] / "privacy.json").read_text())
        assert ledger["entries"][0]["epsilon_total"] == dp["epsilon_total"] > 0
        if extra:  # a partial bundle: the adapters' B matrices and the head only
            from safetensors.numpy import load_file

            names = list(load_file(str(bundle)))
            assert "lateral4.lora_B.weight" in names and "lateral4.weight" not in names
            assert all("lora_B" in n or n.startswith("head.") for n in names), names
    fed.carry()
    result = cli("aggregate", fed.hub, *rule, "--json")
    assert result.code == 0, result.err
    assert (fed.hub / "packages" / "fed-r0001.safetensors").exists()
    result = cli("audit", fed.hub, *hub_root(fed.hub), "--replay")
    assert result.code == 0, result.err


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_the_built_in_detector(tmp_path: Path) -> None:
    """Under torchrun the loss sees DistributedDataParallel's wrapper, not the detector."""
    import os
    import socket
    import subprocess
    import sys

    from flsilo.format.artifact import scan_file

    fed = detect_federation(tmp_path / "fed", train=False)
    site = fed.sites["site-a"]
    with socket.socket() as probe:  # a free port: other runs on this machine may hold a fixed one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(port), "-m", "flsilo", "train",
         str(site / "packages" / "fed-r0000.safetensors"), "--site", str(site),
         "--device", "cpu", "--json"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = site / "outbox" / "fed-r0000-site-a.safetensors"
    m = scan_file(bundle).manifest
    assert m.bundle is not None and m.bundle.world_size == 2
    assert run(["verify", str(bundle), "--key", str(fed.keys / "site-a.pub")]) == 0


@pytest.mark.slow
def test_a_detection_hub_claim_says_which_class_has_no_boxes(
    trained: Federation, tmp_path: Path, cli
) -> None:
    """aggregate --eval on a test set with no square labelled: the detector's claim keeps
    each class's AP@0.5 and its boxes in the test set, as the sites' reports do; the
    square reads as 0 boxes (AP undefined), not as a row of blank classifier figures."""
    fed = trained.copy(tmp_path / "fed")
    fed.carry()
    test_set = scenes(tmp_path / "hub-test", 8, seed=21)
    for label in (test_set / "labels").glob("*.txt"):
        kept = [x for x in label.read_text().splitlines(keepends=True) if not x.startswith("1 ")]
        label.write_text("".join(kept))
    done = cli("aggregate", fed.hub, "--strategy", "median", "--eval", test_set,
               "--eval-format", "yolo", "--json")  # fmt: skip
    assert done.code == 0, done.err
    claim = json.loads(done.out)["report"]["hub_evaluation"]
    assert claim["task"] == "detect" and "primary_metric" not in claim
    assert set(claim["per_class"]) == set(claim["objects"]) == set(SHAPES)
    assert claim["objects"]["square"] == 0 and claim["per_class"]["square"] == {"ap50": None}
    for shape in ("circle", "triangle"):
        assert claim["objects"][shape] > 0 and isinstance(claim["per_class"][shape]["ap50"], float)
    assert claim["ci95"] == {} and claim["confusion"] == []
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay")
    assert audit.code == 0, audit.out
