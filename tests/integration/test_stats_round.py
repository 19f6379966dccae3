"""A ``stats`` round: sites ship input statistics, the hub pools them into the next package's
plan, later packages carry them, and ``audit --replay`` recomputes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import fingerprint, make_key

FEATURES = ("f1", "f2", "f3")


def _table(path: Path, rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    x = rng.normal(size=(n, 3)) * np.array([1.0, 50.0, 0.01]) + np.array([shift, 300.0, 0.0])
    y = (x[:, 0] > shift).astype(int)
    lines = ["label," + ",".join(FEATURES)]
    lines += [f"{'ab'[c]}," + ",".join(repr(float(v)) for v in row) for row, c in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return x


def _federation(cli, root: Path, *extra: str, shape: str = "3") -> tuple[Path, dict[str, Path]]:
    keys = root / "keys"
    for name in ("hub", "site-a", "site-b"):
        make_key(keys / name)
    hub = root / "hub"
    result = cli(
        "hub", "init", hub, "--federation", "tab", "--model", "logreg", "--classes", "a,b",
        "--input-shape", shape, "--key", keys / "hub", "--batch-size", "16",
        "--min-sites", "2", *extra,
    )  # fmt: skip
    assert result.code == 0, result.err
    sites = {}
    for site in ("site-a", "site-b"):
        pub = keys / f"{site}.pub"
        assert cli("hub", "enroll", hub, site, pub, "--fingerprint", fingerprint(pub)).code == 0
        assert cli("hub", "kit", hub, site, "--out", root / f"kit-{site}").code == 0
        sites[site] = root / site
        made = cli(
            "site", "init", sites[site], "--kit", root / f"kit-{site}", "--site-id", site,
            "--key", keys / site, "--hub-fingerprint", fingerprint(keys / "hub.pub"),
            "--data", root / f"{site}.csv",
        )  # fmt: skip
        assert made.code == 0, made.err
    return hub, sites


def _round(
    cli, hub: Path, sites: dict[str, Path], round_: int, said: list[str] | None = None
) -> Path:
    package = hub / "packages" / f"tab-r{round_:04d}.safetensors"
    for site, root in sites.items():
        local = root / "packages" / package.name
        if not local.exists():
            for suffix in ("", ".sig"):
                Path(f"{local}{suffix}").write_bytes(Path(f"{package}{suffix}").read_bytes())
        trained = cli("train", local, "--site", root, "--device", "cpu")
        assert trained.code == 0, trained.err
        bundle = root / "outbox" / f"tab-r{round_:04d}-{site}.safetensors"
        for suffix in ("", ".sig"):
            target = hub / "inbox" / f"{bundle.name}{suffix}"
            target.write_bytes(Path(f"{bundle}{suffix}").read_bytes())
    result = cli("aggregate", hub)
    assert result.code == 0, result.err
    if said is not None:
        said.append(result.err)
    return hub / "packages" / f"tab-r{round_ + 1:04d}.safetensors"


def _plan(cli, package: Path) -> dict:
    report = json.loads(cli("inspect", package, "--json").out)
    return report["manifest"]["package"]["plan"]


def test_a_stats_round_writes_the_pooled_statistics_into_every_later_plan(
    cli, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    xa = _table(tmp_path / "site-a.csv", rng, 60, 0.0)
    xb = _table(tmp_path / "site-b.csv", rng, 90, 5.0)  # another scale: pooled stats differ
    hub, sites = _federation(
        cli, tmp_path, "--schedule", "stats+periodic:2", "--standardize", "federation"
    )
    plan0 = _plan(cli, hub / "packages/tab-r0000.safetensors")
    assert plan0["kind"] == "stats" and plan0["preprocess"]["federation_mean"] == []
    bundle = sites["site-a"] / "outbox/tab-r0000-site-a.safetensors"
    said: list[str] = []
    package1 = _round(cli, hub, sites, 0, said)
    assert "validation" not in said[0]  # a statistics round: nothing was validated
    assert said[0].rstrip().endswith("carry it and its .sig to every site:")
    shown = json.loads(cli("inspect", bundle, "--json").out)
    reveals = shown["manifest"]["bundle"]["reveals"]
    assert "per-channel (or per-feature) sum of input values (the mean)" in reveals
    assert {t["name"] for t in shown["tensors"]} == {
        "stats.count",
        "stats.missing",
        "stats.sum",
        "stats.sum_sq",
    }
    pooled = np.concatenate([xa, xb]).astype(np.float32).astype(np.float64)
    plan1 = _plan(cli, package1)
    assert plan1["kind"] == "train"
    np.testing.assert_allclose(plan1["preprocess"]["federation_mean"], pooled.mean(0), rtol=1e-9)
    np.testing.assert_allclose(plan1["preprocess"]["federation_std"], pooled.std(0), rtol=1e-7)
    assert "federation statistics: mean" in cli("inspect", package1).out
    package2 = _round(cli, hub, sites, 1, said)  # a training round on the standardised features
    assert "sample-weighted site validation accuracy: previous global model" in said[1]
    assert (
        _plan(cli, package2)["preprocess"]["federation_mean"]
        == plan1["preprocess"]["federation_mean"]
    )  # carried into every later package
    last = _round(cli, hub, sites, 2)
    final = json.loads(cli("inspect", last, "--json").out)["manifest"]
    assert final["package"]["final"] and final["package"]["plan"] is None
    shown = " ".join(cli("inspect", last).out.split())  # what the model expects, in words
    assert "plan - (nothing trains on the last package) preprocess resize stretch" in shown
    assert "federation statistics: mean" in shown and "augment" not in shown
    # the final model still says how its inputs are made: evaluation and export read it
    assert final["package"]["preprocess"] == plan1["preprocess"]
    audit = cli("audit", hub, "--replay", "--json", "--hub-key", hub.parent / "keys/hub.pub")
    assert audit.code == 0, audit.out
    checks = {c["name"]: c for c in json.loads(audit.out)["audit"]["checks"]}
    assert all(checks[f"replay r000{r}"]["ok"] for r in (1, 2, 3))


def test_a_site_below_the_minimum_cell_size_refuses_the_stats_round(cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    _table(tmp_path / "site-a.csv", rng, 20, 0.0)
    _table(tmp_path / "site-b.csv", rng, 40, 0.0)
    hub, sites = _federation(
        cli, tmp_path, "--schedule", "stats+periodic:1", "--min-cell-size", "30"
    )
    package = sites["site-a"] / "packages/tab-r0000.safetensors"
    result = cli("train", package, "--site", sites["site-a"], "--device", "cpu")
    assert result.code != 0 and "cell-too-small" in result.err
    assert "20 samples" in result.err
    assert not list((sites["site-a"] / "outbox").glob("*.safetensors"))


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (("--schedule", "stats+periodic:2", "--dp-epsilon", "1", "--dp-budget", "3"), "dp-plan",
         "stats rounds"),
        (("--schedule", "stats+one-shot"), "bad-schedule", "a stats round is followed"),
        (("--schedule", "stats+stats+periodic:2"), "bad-schedule", "a stats round is followed"),
    ],
)  # fmt: skip
def test_stats_schedules_that_hub_init_refuses(
    cli, tmp_path: Path, extra: tuple[str, ...], code: str, words: str
) -> None:
    make_key(tmp_path / "hub-key")
    result = cli(
        "hub", "init", tmp_path / "hub", "--federation", "tab", "--model", "logreg",
        "--classes", "a,b", "--input-shape", "3", "--key", tmp_path / "hub-key", *extra,
    )  # fmt: skip
    assert result.code == 2, result.err
    assert code in result.err and words in result.err
    assert not (tmp_path / "hub").exists()


def test_replay_catches_a_plan_whose_statistics_are_not_the_pooled_ones(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub_kit import roundmath

    rng = np.random.default_rng(5)
    _table(tmp_path / "site-a.csv", rng, 40, 0.0)
    _table(tmp_path / "site-b.csv", rng, 40, 2.0)
    hub, sites = _federation(
        cli, tmp_path, "--schedule", "stats+periodic:1", "--standardize", "federation"
    )
    real = roundmath.pooled_normalisation
    with monkeypatch.context() as patched:  # a hub whose code shifted the means
        patched.setattr(
            roundmath,
            "pooled_normalisation",
            lambda stats: (tuple(m + 1 for m in real(stats)[0]), real(stats)[1]),
        )
        _round(cli, hub, sites, 0)
    audit = cli("audit", hub, "--replay", "--json", "--hub-key", hub.parent / "keys/hub.pub")
    assert audit.code == 3
    checks = {c["name"]: c for c in json.loads(audit.out)["audit"]["checks"]}
    assert not checks["replay r0001"]["ok"]
    assert "differ from the pooled ones" in checks["replay r0001"]["detail"]
