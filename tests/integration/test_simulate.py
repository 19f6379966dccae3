"""flsilo simulate: the federation's training and strategies, on one machine, with outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from sim_kit.partition import partition
from tests.conftest import digits_npz


def _digits(tmp_path: Path, n: int = 400) -> tuple[object, ...]:
    """``simulate``'s options for the first ``n`` of the bundled digits: what these tests
    check needs no more than a few hundred samples (the bundled set has 1,797)."""
    data = digits_npz(tmp_path / "digits.npz", np.arange(n))
    return ("--data", data, "--classes", ",".join("0123456789"), "--input-shape", "1,8,8")


def test_sweep_writes_csv_json_png_and_reports(cli, tmp_path: Path) -> None:
    result = cli(
        "simulate",
        *_digits(tmp_path),
        "--sites",
        "2",
        "--shift",
        "none,invert",
        "--local-epochs",
        "1,2",
        "--total-epochs",
        "2",
        "--model",
        "logreg",
        "--target",
        "-0.5",
        "--one-shot",
        "--out",
        tmp_path / "sim",
        "--json",
    )
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    runs = doc["runs"]
    assert [r["rounds"] for r in runs] == [2, 1]
    assert len(runs[0]["accuracy"]) == 3 and runs[0]["centralized"] is not None
    assert runs[0]["rounds_to_target"] is not None and 0 <= doc["one_shot"]["accuracy"] <= 1
    rows = list(csv.DictReader((tmp_path / "sim" / "simulate.csv").open()))
    assert len(rows) == 3 + 2
    assert (tmp_path / "sim" / "simulate.png").stat().st_size > 1000


def test_partitions_cover_every_sample_once() -> None:
    y = np.repeat(np.arange(10), 30)
    for scheme in ("iid", "dirichlet:0.3", "shards:2"):
        parts = partition(y, 5, scheme, seed=1)
        joined = np.sort(np.concatenate(parts))
        np.testing.assert_array_equal(joined, np.arange(len(y)))
    shards = partition(y, 5, "shards:2", seed=1)
    assert all(len(np.unique(y[p])) <= 4 for p in shards)


def test_bad_partition_is_a_usage_error(cli) -> None:
    result = cli("simulate", "--partition", "zipf", "--model", "logreg")
    assert result.code == 2 and "bad-partition" in result.err


def test_simulate_reads_site_data_formats(cli, tmp_path: Path) -> None:
    data = digits_npz(tmp_path / "d.npz", np.arange(400))
    ok = cli(
        "simulate",
        "--data",
        data,
        "--classes",
        ",".join("0123456789"),
        "--input-shape",
        "1,8,8",
        "--model",
        "logreg",
        "--schedule",
        "periodic:2",
        "--no-baselines",
        "--json",
    )
    assert ok.code == 0, ok.err
    assert len(json.loads(ok.out)["runs"][0]["accuracy"]) == 3
    assert (
        cli("simulate", "--data", data, "--model", "logreg").code == 2
    )  # classes and shape required


def _sim(cli, tmp_path: Path, *args: object) -> dict:
    result = cli(
        "simulate",
        *_digits(tmp_path),
        "--model",
        "logreg",
        "--sites",
        "2",
        "--no-baselines",
        *args,
        "--json",
    )
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_pretrain_epochs_are_honoured(cli, tmp_path: Path) -> None:
    def start_loss(epochs: int) -> float:
        doc = _sim(
            cli,
            tmp_path,
            "--schedule",
            "periodic:1",
            "--pretrain-fraction",
            "0.3",
            "--pretrain-epochs",
            epochs,
        )
        assert doc["runs"][0]["settings"]["pretrain_epochs"] == epochs
        return doc["runs"][0]["loss"][0]

    # more pretraining gives a better start model (it used to be 5 epochs whatever was asked)
    assert start_loss(4) < start_loss(1)


def test_one_shot_trains_as_many_epochs_as_the_periodic_arm(cli, tmp_path: Path) -> None:
    doc = _sim(cli, tmp_path, "--schedule", "periodic:3", "--local-epochs", "2", "--one-shot")
    assert doc["runs"][0]["rounds"] == 3
    assert doc["one_shot"]["local_epochs"] == 6  # not one round's 2
    assert 0 <= doc["one_shot"]["accuracy"] <= 1
