"""``--task sequence`` through the real files: hub init with a charset, sites train a crnn on
image crops labelled by strings in a CSV manifest, the hub aggregates and audits, evaluation
reports exact match and CER, and bad labels are refused one line at a time."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsilo.cli.app import run
from tests.conftest import Federation, fingerprint, hub_root, make_key, tree_digest

CHARSET = "0123AB"
MODEL = "crnn:channels=4x8,hidden=8"
SHAPE = "1,16,32"  # 8 time steps: labels of up to 4 characters (2 x 4 - 1 = 7 steps)
SEQUENCE = ["--task", "sequence", "--charset", CHARSET, "--max-length", "4"]


def plates(folder: Path, labels: list[str], seed: int) -> Path:
    """A manifest of small grey crops, one per label (noise: the pipeline is what is tested)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True)
    with (folder / "labels.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label"])
        for i, label in enumerate(labels):
            pixels = rng.integers(0, 256, size=(20, 48), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "img" / f"{i}.png")
            out.writerow([f"img/{i}.png", label])
    return folder / "labels.csv"


def random_labels(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(CHARSET), size=int(rng.integers(1, 5)))) for _ in range(n)]


def ok(*args: object) -> None:
    assert run([str(a) for a in args]) == 0, args


def hub_init(hub: Path, key: Path, *extra: str) -> int:
    return run(
        [
            str(a)
            for a in (
                "hub",
                "init",
                hub,
                "--federation",
                "plates",
                "--model",
                MODEL,
                "--input-shape",
                SHAPE,
                "--key",
                key,
                "--schedule",
                "periodic:2",
                "--batch-size",
                "8",
                "--optimizer",
                "adam",
                "--lr",
                "0.01",
                "--min-sites",
                "2",
                *SEQUENCE,
                *extra,
            )
        ]  # fmt: skip
    )


def build(root: Path, *extra: str) -> Federation:
    root.mkdir(parents=True)
    keys = root / "keys"
    for name in ("hub", "site-a", "site-b"):
        make_key(keys / name)
    hub = root / "hub"
    assert hub_init(hub, keys / "hub", *extra) == 0
    sites, bundles, data = {}, {}, {}
    for i, site in enumerate(("site-a", "site-b")):
        data[site] = plates(root / f"data-{site}", random_labels(16, i), i)
        pub = keys / f"{site}.pub"
        ok("hub", "enroll", hub, site, pub, "--fingerprint", fingerprint(pub))
        ok("hub", "kit", hub, site, "--out", root / f"kit-{site}")
        sites[site] = root / site
        ok("site", "init", sites[site], "--kit", root / f"kit-{site}", "--site-id", site,
           "--key", keys / site, "--hub-fingerprint", fingerprint(keys / "hub.pub"),
           "--data", data[site])  # fmt: skip
        ok("train", hub / "packages" / "plates-r0000.safetensors", "--site", sites[site],
           "--device", "cpu")  # fmt: skip
        bundles[site] = sites[site] / "outbox" / f"plates-r0000-{site}.safetensors"
    return Federation(root, hub, keys, sites, bundles, data)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return build(tmp_path_factory.mktemp("seq") / "fed")


@pytest.fixture
def fed(template: Federation, tmp_path: Path) -> Federation:
    return template.copy(tmp_path / "fed")


def test_a_sequence_federation_trains_aggregates_and_replays(fed: Federation, cli) -> None:
    toml = (fed.hub / "federation.toml").read_text()
    assert 'task = "sequence"' in toml and f'charset = "{CHARSET}"' in toml
    fed.carry()
    result = cli("aggregate", fed.hub, "--json")
    assert result.code == 0, result.err
    package = fed.hub / "packages" / "plates-r0001.safetensors"
    assert package.exists()
    result = cli("audit", fed.hub, *hub_root(fed.hub), "--replay")
    assert result.code == 0 and "bit-identical" in result.out
    test = plates(fed.root / "test", ["0123", "AB", "B", "1A0"], 9)
    result = cli("evaluate", package, "--hub", fed.hub, "--data", test, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["samples"] == 4 and report["classes"] == []
    assert 0.0 <= report["exact_match"] <= 1.0 and report["cer"] >= 0.0
    assert report["accuracy"] == report["exact_match"]
    assert report["reference_chars"] == 10 and report["edits"] == round(report["cer"] * 10)
    assert set(report["ci95"]) == {"exact_match", "cer"}
    result = cli("evaluate", package, "--hub", fed.hub, "--data", test)
    # one format: a percentage named as the figure it is, the CER as a number
    shown = f"exact match {100 * report['exact_match']:.1f}%, CER {report['cer']:.3f}, loss "
    assert result.code == 0 and shown in " ".join(result.out.split()), result.out


def test_the_robust_rules_and_replay_take_sequence_bundles(fed: Federation, cli) -> None:
    fed.carry()
    done = cli("aggregate", fed.hub, "--strategy", "median")
    flat = " ".join(done.err.split())  # the console may wrap a line anywhere
    assert done.code == 0 and "val. exact match" in flat and "val. acc." not in flat
    assert "sample-weighted site validation exact match: previous global model " in flat
    result = cli("audit", fed.hub, *hub_root(fed.hub), "--replay")
    assert result.code == 0 and "bit-identical" in result.out


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("AB-1", "outside the federation's charset ('-')"),
        ("01230", "5 characters long, past the plan's maximum of 4"),
    ],
)
def test_a_label_the_model_cannot_write_is_one_line_naming_its_row(
    fed: Federation, cli, label: str, why: str
) -> None:
    manifest = fed.data["site-a"]
    lines = manifest.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + "," + label
    manifest.write_text("\n".join(lines) + "\n")
    before = tree_digest(fed.root)
    package = fed.sites["site-a"] / "packages" / "plates-r0000.safetensors"
    (fed.sites["site-a"] / "outbox" / fed.bundles["site-a"].name).unlink()
    (fed.sites["site-a"] / "outbox" / (fed.bundles["site-a"].name + ".sig")).unlink()
    before = tree_digest(fed.root)
    result = cli("train", package, "--site", fed.sites["site-a"], "--device", "cpu")
    assert result.code == 4
    err = result.err.strip().splitlines()
    assert len(err) == 1 and "error[bad-record]" in err[0], result.err
    assert f"{manifest}:4" in err[0] and why in err[0] and "hint:" in err[0]
    assert "--charset" in err[0] or "--max-length" in err[0]
    after = tree_digest(fed.root)
    assert {k: v for k, v in after.items() if "index" not in k} == {
        k: v for k, v in before.items() if "index" not in k
    }


@pytest.mark.parametrize(
    ("extra", "code", "says"),
    [
        (["--charset", ""], "bad-config", "needs --charset"),
        (["--charset", "AA1"], "bad-config", "lists 'A' more than once"),
        (["--max-length", "0"], "bad-config", "--max-length"),
        (["--classes", "a,b"], "bad-config", "takes no classes"),
        (["--max-length", "5"], "bad-model-spec", "8 time steps"),
        (["--model", "cnn"], "bad-model-spec", "N x T x K"),
    ],
)
def test_hub_init_refuses_what_a_sequence_federation_cannot_be(
    tmp_path: Path, cli, extra: list[str], code: str, says: str
) -> None:
    key = make_key(tmp_path / "hub")
    result = cli("hub", "init", tmp_path / "h", "--federation", "plates", "--model", MODEL,
                 "--input-shape", SHAPE, "--key", key, *SEQUENCE, *extra)  # fmt: skip
    assert result.code == 2, result.err
    assert f"error[{code}]" in result.err and says in result.err
    assert not (tmp_path / "h").exists()


def _site_report(cli, fed: Federation, package: Path) -> dict:
    """site-a's signed report on ``package`` over 6 held-out plates, checked as the site
    shows it; the report's JSON."""
    site = fed.sites["site-a"]
    held_out = plates(fed.root / "held-out", random_labels(6, 5), 5)
    result = cli("evaluate", package, "--site", site, "--data", held_out, "--report")
    assert result.code == 0, result.err
    round_ = package.stem.rsplit("-", 1)[1]  # plates-r0001: r0001
    report = json.loads((site / "outbox" / f"{round_}-site-a.eval.json").read_text())
    assert report["task"] == "sequence" and report["classes"] == []
    shown = f": exact match {100 * report['metrics']['exact_match']:.1f}% on 6 samples"
    assert shown in " ".join(result.err.split())
    assert set(report["metrics"]) >= {"exact_match", "cer", "samples", "ci95"}
    return report


def _sequence_card(cli, fed: Federation, package: Path) -> str:
    """The model card of ``package``, with a sequence task's rows checked; its markdown."""
    out = fed.root / "card"
    result = cli("report", package, "--hub", fed.hub, *hub_root(fed.hub), "--out", out)
    assert result.code == 0, result.err
    card = (out / "card.md").read_text()
    assert "| task | sequence |" in card
    assert f"| charset, longest string | {CHARSET}, 4 |" in card
    assert "exact match" in card and "character error rate" in card
    return card


def test_a_signed_report_on_round_0_is_tabled_archived_and_carded(fed: Federation, cli) -> None:
    """The default tier's twin of the two-round test below: site-a reports on round 0's
    package, the report goes to the hub with the bundles, one aggregate archives it and the
    card of round 1 shows it; site-a then trains round 1 on the global model."""
    site = fed.sites["site-a"]
    report = _site_report(cli, fed, site / "packages" / "plates-r0000.safetensors")
    fed.carry()
    for name in ("r0000-site-a.eval.json", "r0000-site-a.eval.json.sig"):
        (fed.hub / "inbox" / name).write_bytes((site / "outbox" / name).read_bytes())
    result = cli("hub", "evaluations", fed.hub, "--inbox", fed.hub / "inbox", "--json")
    assert result.code == 0, result.err
    assert str(report["metrics"]["exact_match"]) in json.dumps(json.loads(result.out))
    done = cli("aggregate", fed.hub, "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["report"]["evaluations"] == ["r0000-site-a.eval.json"]
    package = fed.hub / "packages" / "plates-r0001.safetensors"
    for suffix in ("", ".sig"):
        (site / "packages" / f"{package.name}{suffix}").write_bytes(
            package.with_name(package.name + suffix).read_bytes()
        )
    done = cli("train", site / "packages" / package.name, "--site", site, "--device", "cpu")
    assert done.code == 0, done.err
    flat = " ".join(done.err.split())
    assert "global model exact match " in flat and "% (loss " in flat
    assert "| r0000 | site-a | 6 |" in _sequence_card(cli, fed, package)


@pytest.mark.slow
def test_signed_reports_the_cross_site_table_and_the_card(fed: Federation, cli) -> None:
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    package = fed.hub / "packages" / "plates-r0001.safetensors"
    site = fed.sites["site-a"]
    for suffix in ("", ".sig"):
        (site / "packages" / f"{package.name}{suffix}").write_bytes(
            package.with_name(package.name + suffix).read_bytes()
        )
    report = _site_report(cli, fed, site / "packages" / package.name)
    for name in ("r0001-site-a.eval.json", "r0001-site-a.eval.json.sig"):
        (fed.hub / "inbox" / name).write_bytes((site / "outbox" / name).read_bytes())
    result = cli("hub", "evaluations", fed.hub, "--inbox", fed.hub / "inbox", "--json")
    assert result.code == 0, result.err
    cells = json.dumps(json.loads(result.out))
    assert str(report["metrics"]["exact_match"]) in cells
    for site_id in ("site-a", "site-b"):  # round 1, so the report is archived and logged
        done = cli("train", site / "packages" / package.name if site_id == "site-a" else package,
                   "--site", fed.sites[site_id], "--device", "cpu")  # fmt: skip
        assert done.code == 0, done.err
        flat = " ".join(done.err.split())
        assert "global model exact match " in flat and "% (loss " in flat
        outbox = fed.sites[site_id] / "outbox"
        for f in outbox.glob("plates-r0001-*"):
            (fed.hub / "inbox" / f.name).write_bytes(f.read_bytes())
    assert cli("aggregate", fed.hub).code == 0
    _sequence_card(cli, fed, package)


@pytest.mark.slow
def test_a_dp_federation_trains_the_crnn_with_dp_sgd(tmp_path: Path, cli) -> None:
    pytest.importorskip("opacus", reason="DP tests need the 'dp' extra (Opacus)")
    fed = build(tmp_path / "fed", "--dp-noise-multiplier", "1.0", "--dp-budget", "50")
    bundle = json.loads(cli("inspect", fed.bundles["site-a"], "--json").out)["manifest"]["bundle"]
    assert bundle["dp"]["noise_multiplier"] == 1.0 and bundle["dp"]["epsilon_round"] > 0
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0


@pytest.mark.slow
def test_export_checks_the_strings_onnx_reads(fed: Federation, cli, tmp_path: Path) -> None:
    """The exported crnn gives torch's logits (within 1e-4) and reads the same strings."""
    onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    from flsilo.scoring.strings import decode_indices, greedy_paths

    package = fed.sites["site-a"] / "packages" / "plates-r0000.safetensors"
    out = tmp_path / "plates.onnx"
    result = cli("export", package, "--site", fed.sites["site-a"], "--out", out, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["max_abs_diff"] <= 1e-4
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["flsilo.task"] == "sequence" and meta["flsilo.charset"] == CHARSET
    assert meta["flsilo.max_length"] == "4" and json.loads(meta["flsilo.classes"]) == []
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 1, 16, 32)).astype(np.float32)
    logits = session.run(None, {"input": x})[0]
    assert logits.shape == (3, 8, len(CHARSET) + 1)
    strings = [decode_indices(p, CHARSET) for p in greedy_paths(logits.argmax(axis=2))]
    assert all(set(s) <= set(CHARSET) for s in strings)


def test_simulate_plans_a_sequence_federation(tmp_path: Path, cli) -> None:
    data = plates(tmp_path / "all", random_labels(12, 3), 3)
    result = cli("simulate", "--data", data, "--input-shape", SHAPE, "--model", MODEL, *SEQUENCE,
                 "--sites", "2", "--schedule", "periodic:2", "--local-epochs", "1",
                 "--batch-size", "4", "--optimizer", "adam", "--one-shot", "--json")  # fmt: skip
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    run_ = doc["runs"][0]
    assert len(run_["accuracy"]) == 3  # the start and two rounds: exact-string accuracy
    assert set(run_["local_only"]) == {"site-0", "site-1"} and run_["centralized"] is not None
    assert doc["one_shot"]["local_epochs"] == 2
    result = cli("simulate", "--data", data, "--input-shape", SHAPE, "--model", MODEL)
    assert result.code == 2 and "--classes" in result.err  # classify still needs its classes


def test_a_plan_file_for_a_sequence_federation_needs_no_classes(tmp_path: Path, cli) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(
        'format_version = 3\nfederation = "plates"\n'
        f'model = "{MODEL}"\ninput_shape = [1, 16, 32]\n'
        '[schedule]\nkind = "periodic"\nrounds = 2\nlocal_epochs = [1, 1]\n'
        f'[plan]\nbatch_size = 8\ntask = "sequence"\ncharset = "{CHARSET}"\nmax_length = 4\n'
    )
    key = make_key(tmp_path / "hub")
    result = cli("hub", "init", tmp_path / "h", "--config", plan, "--key", key)
    assert result.code == 0, result.err
    toml = (tmp_path / "h" / "federation.toml").read_text()
    assert "classes = []" in toml and 'task = "sequence"' in toml
