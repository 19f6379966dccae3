"""``--task multilabel`` through the real files: hub init, train at two sites (CSV tables
with one 0/1 column per finding), aggregate by a robust rule, audit --replay, evaluate;
DP-SGD and the closed-form ridge head on multi-hot targets; a missing finding column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flsilo.format.artifact import scan_file
from flsilo.format.manifest import MANIFEST_KEY
from tests.conftest import fingerprint, hub_root, make_key, tree_digest

FINDINGS = ("effusion", "nodule")


def _table(path: Path, n: int, seed: int, drop: str | None = None) -> Path:
    """Four features; each finding is present when a noisy linear score of them is high."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = np.stack([x[:, 0] + 0.5 * x[:, 1], x[:, 2] - x[:, 3]], axis=1)
    y = (y + 0.3 * rng.normal(size=y.shape) > 0).astype(int)
    columns = ["f0", "f1", "f2", "f3", *(f for f in FINDINGS if f != drop)]
    rows = [",".join(columns)]
    for xi, yi in zip(x, y, strict=True):
        cells = [f"{v:.4f}" for v in xi] + [str(v) for f, v in zip(FINDINGS, yi, strict=True)
                                            if f != drop]  # fmt: skip
        rows.append(",".join(cells))
    path.write_text("\n".join(rows) + "\n")
    return path


def _federation(
    root: Path, cli, *extra: str, sites: tuple[str, ...] = ("site-a", "site-b"), model="logreg"
):
    keys = root / "keys"
    for name in ("hub", *sites):
        make_key(keys / name)
    hub = root / "hub"
    init = cli("hub", "init", hub, "--federation", "ml", "--task", "multilabel",
               "--classes", ",".join(FINDINGS), "--input-shape", "4", "--key", keys / "hub",
               "--batch-size", "16", "--lr", "0.5", "--min-sites", "1", "--model", model,
               *extra)  # fmt: skip
    assert init.code == 0, init.err
    site_dirs = {}
    for i, site in enumerate(sites):
        pub = keys / f"{site}.pub"
        assert cli("hub", "enroll", hub, site, pub, "--fingerprint", fingerprint(pub)).code == 0
        assert cli("hub", "kit", hub, site, "--out", root / f"kit-{site}").code == 0
        data = _table(root / f"{site}.csv", 160, seed=i)
        site_dirs[site] = root / site
        r = cli("site", "init", root / site, "--kit", root / f"kit-{site}", "--site-id", site,
                "--key", keys / site, "--hub-fingerprint", fingerprint(keys / "hub.pub"),
                "--data", data)  # fmt: skip
        assert r.code == 0, r.err
    return hub, keys, site_dirs


def _train_and_carry(cli, hub: Path, sites: dict[str, Path], round_: int) -> None:
    for site, folder in sites.items():
        package = folder / "packages" / f"ml-r{round_:04d}.safetensors"
        if not package.exists():
            src = hub / "packages" / package.name
            package.write_bytes(src.read_bytes())
            Path(f"{package}.sig").write_bytes(Path(f"{src}.sig").read_bytes())
        r = cli("train", package, "--site", folder, "--device", "cpu", "--workers", "0")
        assert r.code == 0, r.err
        if "validation on 0:" not in r.err:  # a closed-form head keeps no validation split
            flat = " ".join(r.err.split())  # the console may wrap the line anywhere
            assert "global model mean AUROC " in flat and "trained mean AUROC " in flat
        bundle = folder / "outbox" / f"ml-r{round_:04d}-{site}.safetensors"
        for suffix in ("", ".sig"):
            (hub / "inbox" / f"{bundle.name}{suffix}").write_bytes(
                Path(f"{bundle}{suffix}").read_bytes()
            )


def _manifest(path: Path) -> dict:
    return json.loads(scan_file(path, data_digest=False).header.metadata[MANIFEST_KEY])


def test_multilabel_trains_aggregates_replays_and_evaluates(tmp_path: Path, cli) -> None:
    hub, keys, sites = _federation(
        tmp_path, cli, "--schedule", "periodic:2", "--local-epochs", "3",
        "--strategy", "trimmed-mean:0.2", "--thresholds", "0.5,0.4",
    )  # fmt: skip
    for round_ in (0, 1):
        _train_and_carry(cli, hub, sites, round_)
        r = cli("aggregate", hub, "--key", keys / "hub")
        assert r.code == 0, r.err
        # the task's primary metric, named, in the table and the line under it; no accuracy
        flat = " ".join(r.err.split())  # the console may wrap a line anywhere
        assert "val. mean AUROC" in flat and "val. acc." not in flat
        assert "sample-weighted site validation mean AUROC: previous global model 0." in flat
    bundle = _manifest(sites["site-a"] / "outbox" / "ml-r0001-site-a.safetensors")
    assert bundle["bundle"]["plan"]["task"] == "multilabel"
    assert bundle["bundle"]["plan"]["thresholds"] == [0.5, 0.4]
    assert bundle["model"]["task"]["name"] == "multilabel"
    reported = bundle["bundle"]["metrics_trained"]["values"]
    shown = cli("inspect", sites["site-a"] / "outbox" / "ml-r0001-site-a.safetensors").out
    assert f"mean AUROC {reported['mean_auroc']:.3f}, loss " in " ".join(shown.split())
    assert set(reported) == {"exact_match", "mean_auroc", "auroc.effusion", "auroc.nodule"}
    history = json.loads(cli("hub", "history", hub, "--json").out)
    assert history["metric"] == "mean_auroc"
    last = history["rounds"][-1]
    assert 0.5 < last["primary_after"] <= 1 and last["sites"][0]["primary_after"] is not None
    table = cli("hub", "history", hub, "--png", tmp_path / "history.png")
    assert "val mean AUROC" in table.out and (tmp_path / "history.png").stat().st_size > 0
    assert cli("audit", hub, *hub_root(hub), "--replay").code == 0
    final = hub / "packages" / "ml-r0002.safetensors"
    test = _table(tmp_path / "test.csv", 120, seed=7)  # each AUROC's interval is a bootstrap
    r = cli("evaluate", final, "--hub", hub, "--data", test, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert set(out["per_class"]) == set(FINDINGS)
    for finding in FINDINGS:
        row = out["per_class"][finding]
        assert row["auroc"] > 0.85 and row["ci95"]["auroc"] is not None
        assert out["values"][f"auroc.{finding}"] == pytest.approx(row["auroc"])
    assert out["values"]["mean_auroc"] > 0.85 and out["samples"] == 120
    assert 0 < out["exact_match"] <= 1 and out["confusion"] == []
    text = cli("evaluate", final, "--hub", hub, "--data", test)
    assert text.code == 0 and "effusion" in text.out
    assert f"mean AUROC {out['values']['mean_auroc']:.3f}, exact match " in " ".join(
        text.out.split()
    )
    _signed_report(cli, hub, sites["site-a"], test, "ml-r0001.safetensors", dp=False)


def _signed_report(cli, hub: Path, site: Path, data: Path, package: str, *, dp: bool) -> None:
    """A site's signed evaluation report on a multilabel package, as the hub tables it."""
    r = cli("evaluate", site / "packages" / package, "--site", site, "--data", data,
            "--report", "--json")  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(Path(json.loads(r.out)["report"]).read_bytes())
    assert report["task"] == "multilabel" and 0 <= report["metrics"]["mean_auroc"] <= 1
    assert ("per_class" in report["metrics"]) is not dp  # DP: whole-set figures only
    shown = cli("hub", "evaluations", hub, "--inbox", site / "outbox", "--json")
    assert shown.code == 0, shown.err
    (row,) = json.loads(shown.out)["reports"]
    assert row["metrics"]["mean_auroc"] == report["metrics"]["mean_auroc"]
    table = cli("hub", "evaluations", hub, "--inbox", site / "outbox")
    shown_value = f"{report['metrics']['mean_auroc']:.3f}"
    assert table.code == 0 and "mean AUROC per package and site" in " ".join(table.out.split())
    assert shown_value in table.out and "%" not in table.out.split("site-a", 1)[1]


def test_dp_sgd_trains_a_multilabel_plan(tmp_path: Path, cli) -> None:
    hub, keys, sites = _federation(
        tmp_path, cli, "--schedule", "periodic:1", "--dp-noise-multiplier", "1.0",
        "--dp-budget", "20", "--dp-clip", "1.0", sites=("site-a",),
    )  # fmt: skip
    _train_and_carry(cli, hub, sites, 0)
    bundle = _manifest(sites["site-a"] / "outbox" / "ml-r0000-site-a.safetensors")
    assert bundle["bundle"]["dp"]["epsilon_round"] > 0
    test = _table(tmp_path / "test.csv", 200, seed=7)
    agg = cli("aggregate", hub, "--key", keys / "hub", "--eval", test, "--json")
    assert agg.code == 0, agg.err
    # the hub's claim, like a DP site's report, holds the whole-set figures only: no
    # finding's AUROC (auroc.NAME), no per-finding rows
    claim = json.loads(agg.out)["report"]["hub_evaluation"]
    assert set(claim["figures"]) == {"exact_match", "mean_auroc", "ece", "loss"}
    assert claim["per_class"] == {} and claim["ci95"] == {} and claim["confusion"] == []
    assert cli("audit", hub, *hub_root(hub), "--replay").code == 0
    _signed_report(cli, hub, sites["site-a"], test, "ml-r0000.safetensors", dp=True)
    # The final package carries no plan; the site's federation.toml still makes its report
    # on the final model a DP federation's: whole-set figures only.
    final = hub / "packages" / "ml-r0001.safetensors"
    r = cli("evaluate", final, "--site", sites["site-a"], "--data", test, "--report", "--json")
    assert r.code == 0, r.err
    report = json.loads(Path(json.loads(r.out)["report"]).read_bytes())
    assert report["dp"] is True and "per_class" not in report["metrics"]
    assert "confusion" not in report["metrics"] and 0 <= report["metrics"]["mean_auroc"] <= 1


def test_the_closed_form_head_fits_multi_hot_targets(tmp_path: Path, cli) -> None:
    hub, keys, sites = _federation(
        tmp_path, cli, "--schedule", "closed-form", "--min-sites", "2", model="mlp:hidden=16"
    )
    _train_and_carry(cli, hub, sites, 0)
    stats = _manifest(sites["site-b"] / "outbox" / "ml-r0000-site-b.safetensors")
    assert stats["bundle"]["plan"]["kind"] == "statistics"
    r = cli("aggregate", hub, "--key", keys / "hub")
    assert r.code == 0, r.err
    assert cli("audit", hub, *hub_root(hub), "--replay").code == 0
    test = _table(tmp_path / "test.csv", 120, seed=7)
    final = hub / "packages" / "ml-r0001.safetensors"
    out = json.loads(cli("evaluate", final, "--hub", hub, "--data", test, "--json").out)
    assert min(out["per_class"][f]["auroc"] for f in FINDINGS) > 0.7


def test_a_missing_finding_column_is_one_line_showing_the_header(tmp_path: Path, cli) -> None:
    hub, _, sites = _federation(tmp_path, cli, "--schedule", "periodic:1", sites=("site-a",))
    data = _table(tmp_path / "short.csv", 40, seed=3, drop="nodule")
    package = hub / "packages" / "ml-r0000.safetensors"
    before = _without_locks(tree_digest(tmp_path))
    r = cli("train", package, "--site", sites["site-a"], "--data", data, "--device", "cpu")
    assert r.code == 4
    line = r.err.strip()
    assert "\n" not in line and "csv-missing-column" in line and "'nodule'" in line
    assert "f0, f1, f2, f3, effusion" in line
    assert _without_locks(tree_digest(tmp_path)) == before


def _without_locks(tree: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if not k.endswith(".lock")}


def test_simulate_runs_a_multilabel_federation_against_pooled_training(tmp_path: Path, cli) -> None:
    data = _table(tmp_path / "all.csv", 600, seed=11)
    r = cli("simulate", "--data", data, "--data-format", "csv", "--task", "multilabel",
            "--classes", ",".join(FINDINGS), "--input-shape", "4", "--model", "logreg",
            "--sites", "3", "--schedule", "periodic:3", "--local-epochs", "2", "--lr", "0.5",
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    run = json.loads(r.out)["runs"][0]
    assert run["metric"] == "mean_auroc" and len(run["accuracy"]) == 4
    assert run["accuracy"][-1] > 0.85 and run["centralized"] > 0.85
    assert set(run["values"]) >= {"auroc.effusion", "auroc.nodule", "exact_match"}
    assert run["centralized_values"]["auroc.nodule"] > 0.85
    text = cli("simulate", "--data", data, "--data-format", "csv", "--task", "multilabel",
               "--classes", ",".join(FINDINGS), "--input-shape", "4", "--model", "logreg",
               "--schedule", "closed-form", "--no-baselines")  # fmt: skip
    assert text.code == 0 and "test mean AUROC 0." in text.err
    assert "AUROC" in text.out and "mean_auroc" not in text.out  # the column, named
    assert "%" not in text.out  # an AUROC is a number, not a percentage
    digits = cli("simulate", "--task", "multilabel", "--classes", "a,b", "--schedule", "one-shot")
    assert digits.code == 2 and "labeled for classify" in digits.err
