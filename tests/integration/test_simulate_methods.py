"""simulate runs server optimizers and Fisher merging through the hub's own aggregator."""

from __future__ import annotations

import json

import pytest


def _final(cli, *args: object) -> float:
    result = cli(
        "simulate", "--model", "logreg", "--sites", "2", "--no-baselines",
        "--schedule", "periodic:2", *args, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    return json.loads(result.out)["runs"][0]["accuracy"][-1]


@pytest.mark.slow
def test_server_optimizer_and_fisher_change_the_simulated_model(cli) -> None:
    plain = _final(cli)
    moved = _final(cli, "--server-optimizer", "fedadam", "--server-lr", "0.05")
    fisher = _final(cli, "--merge", "fisher")
    assert moved != plain and fisher != plain
    bad = cli("simulate", "--model", "logreg", "--server-optimizer", "sgd")
    assert bad.code == 2 and "bad-server-optimizer" in bad.err
