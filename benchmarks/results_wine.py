"""Results: a raw table across three sites, with and without the federation's statistics.

Usage: python benchmarks/results_wine.py [--seeds 1,2,3] [--rounds 4] [--local-epochs 5]

Data: scikit-learn's wine table (178 wines, 13 chemical measurements on scales from 0.1
to 1,680, 3 cultivars), written as CSV. One test split (30%, stratified, ``TEST_SEED``)
is held out for every seed; each seed deals the rest at random to three sites. Every arm
runs the real command line (hub init, enroll, kit, site init, train, aggregate, evaluate)
with the ``mlp`` model, SGD, the same plan, and ``R`` rounds of training:

- raw: the CSVs as they are (``--schedule periodic:R``);
- stats round: ``--schedule stats+periodic:R --standardize federation``: one extra trip
  in which the sites ship per-feature sums, and the hub writes the pooled mean and
  standard deviation into every later plan;
- standardised centrally: the CSVs standardised by hand with the pooled training data's
  mean and standard deviation before the federation starts (``periodic:R``).

Accuracy is the final package's on the test split (``flsilo evaluate``). Prints a markdown
table: mean and sample standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cli, enroll_sites

from flsilo.signing.keys import generate_key, write_new_key

TEST_SEED = 2026
SITES = ("site-a", "site-b", "site-c")
ARMS = ("raw", "stats round", "standardised centrally")


def load_wine() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_wine as sk_wine

    data = sk_wine()
    return data.data.astype(np.float64), data.target.astype(int), list(data.feature_names)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, names: list[str]) -> Path:
    lines = ["label," + ",".join(names)]
    lines += [f"c{c}," + ",".join(repr(float(v)) for v in row) for row, c in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified 30% test split, the same for every seed."""
    rng = np.random.default_rng(TEST_SEED)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[: round(0.3 * (y == c).sum())] for c in set(y)]
    )
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, np.sort(test)


def federation(
    work: Path, csvs: dict[str, Path], test: Path, schedule: str, extra: list[str], args
) -> float:
    keys = work / "keys"
    for name in ("hub", *SITES):
        write_new_key(keys / name, generate_key("ed25519"), None, name)
    hub = work / "hub"
    rounds = int(schedule.rpartition(":")[2]) + (1 if schedule.startswith("stats+") else 0)
    cli(
        "hub", "init", hub, "--federation", "wine", "--model", "mlp",
        "--classes", "c0,c1,c2", "--input-shape", "13", "--key", keys / "hub",
        "--schedule", schedule, "--local-epochs", args.local_epochs,
        "--batch-size", args.batch_size, "--lr", args.lr, "--seed", args.seed_plan,
        "--min-sites", "3", *extra,
    )  # fmt: skip
    enroll_sites(hub, keys, work, {site: csvs[site] for site in SITES})
    for r in range(rounds):
        package = hub / "packages" / f"wine-r{r:04d}.safetensors"
        for site in SITES:
            local = work / site / "packages" / package.name
            for suffix in ("", ".sig"):
                shutil.copy(f"{package}{suffix}", f"{local}{suffix}")
            cli("train", local, "--site", work / site, "--device", "cpu")
            bundle = work / site / "outbox" / f"wine-r{r:04d}-{site}.safetensors"
            for suffix in ("", ".sig"):
                shutil.copy(f"{bundle}{suffix}", hub / "inbox" / f"{bundle.name}{suffix}")
        cli("aggregate", hub)
    final = hub / "packages" / f"wine-r{rounds:04d}.safetensors"
    report = json.loads(cli("evaluate", final, "--hub", hub, "--data", test, "--json"))
    return float(report["accuracy"])


def run_seed(seed: int, args) -> dict[str, float]:
    x, y, names = load_wine()
    train, test_idx = split(y)
    rng = np.random.default_rng(seed)
    order = rng.permutation(train)
    parts = dict(zip(SITES, np.array_split(order, len(SITES)), strict=True))
    mean, std = x[train].mean(0), x[train].std(0)
    out = {}
    args.seed_plan = seed
    for arm in ARMS:
        with tempfile.TemporaryDirectory(prefix="wine-") as tmp:
            work = Path(tmp)
            scale = (lambda v: (v - mean) / std) if arm == ARMS[2] else (lambda v: v)
            csvs = {
                s: write_csv(work / f"{s}.csv", scale(x[i]), y[i], names) for s, i in parts.items()
            }
            test = write_csv(work / "test.csv", scale(x[test_idx]), y[test_idx], names)
            schedule = f"periodic:{args.rounds}"
            extra: list[str] = []
            if arm == ARMS[1]:
                schedule, extra = f"stats+{schedule}", ["--standardize", "federation"]
            out[arm] = federation(work, csvs, test, schedule, extra, args)
        print(f"seed {seed} {arm}: {100 * out[arm]:.1f}%", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-epochs", default="5")
    parser.add_argument("--batch-size", default="16")
    parser.add_argument("--lr", default="0.05")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = [run_seed(s, args) for s in seeds]
    print(
        f"| arm ({args.rounds} training rounds, mlp) | test accuracy, mean ± sd over {len(seeds)} seeds |"
    )
    print("| --- | --- |")
    for arm in ARMS:
        values = np.array([r[arm] for r in results]) * 100
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        print(f"| {arm} | {values.mean():.1f}% ± {sd:.1f} |")


if __name__ == "__main__":
    main()
