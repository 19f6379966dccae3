"""Results: a multilabel table across three sites, federated against pooled training.

Usage: python benchmarks/results_multilabel.py [--seeds 1,2,3] [--rounds 8] [--local-epochs 2]

Data: a synthetic table written by this script (``TABLE_SEED``): 3,000 patients, 10
measurements each, and three findings (``effusion``, ``nodule``, ``edema``) that depend on
the measurements through sums, a square and a product, with noise, at prevalences of about
30%, 20% and 12%. One test split (25%) is held out for every seed. Each seed deals the rest
to three sites unevenly: a patient's site is drawn with odds that follow their first
measurement, so the sites differ in their mix (covariate shift) and in each finding's
prevalence. Both arms run the real command line (hub init, enroll, kit, site init, train,
aggregate, evaluate --json) with ``--task multilabel``, the ``mlp`` model, SGD and the
same plan (R rounds of E local epochs):

- federated: the three sites, FedAvg (``--schedule periodic:R``);
- pooled: one site holding all three sites' training data, the same schedule (the same
  number of epochs over the same data, in one place).

AUROC per finding is the final package's on the test split. Prints a markdown table: mean
and sample standard deviation over the seeds, and the federated-minus-pooled gap.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cli, enroll_sites

from flsilo.signing.keys import generate_key, write_new_key

TABLE_SEED = 2026
FINDINGS = ("effusion", "nodule", "edema")
SITES = ("site-a", "site-b", "site-c")
FEATURES = [f"m{i}" for i in range(10)]


def make_table() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(TABLE_SEED)
    x = rng.normal(size=(3000, 10))
    scores = np.stack(
        [
            x[:, 0] + x[:, 1] - 0.5 * x[:, 2] ** 2,
            x[:, 3] - x[:, 4] + 0.7 * x[:, 0] * x[:, 5],
            x[:, 6] + x[:, 7] + 0.5 * x[:, 8] - x[:, 9],
        ],
        axis=1,
    )
    scores += 0.6 * rng.normal(size=scores.shape)
    cut = np.quantile(scores, [0.70, 0.80, 0.88], axis=0).diagonal()
    return x, (scores > cut).astype(int)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    lines = [",".join([*FEATURES, *FINDINGS])]
    lines += [
        ",".join([*(f"{v:.5f}" for v in row), *(str(int(b)) for b in bits)])
        for row, bits in zip(x, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def deal(x: np.ndarray, seed: int) -> np.ndarray:
    """Each training row's site: odds exp(+x0), 1, exp(-x0) (a covariate shift)."""
    rng = np.random.default_rng(seed)
    logits = np.stack([x[:, 0], np.zeros(len(x)), -x[:, 0]], axis=1)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return np.array([rng.choice(3, p=row) for row in p])


def federation(work: Path, csvs: dict[str, Path], test: Path, seed: int, args) -> dict[str, float]:
    """Run the federation through the command line; AUROC per finding of the final package."""
    keys = work / "keys"
    for name in ("hub", *csvs):
        write_new_key(keys / name, generate_key("ed25519"), None, name)
    hub = work / "hub"
    cli("hub", "init", hub, "--federation", "ml", "--task", "multilabel",
        "--classes", ",".join(FINDINGS), "--input-shape", len(FEATURES),
        "--model", "mlp:hidden=32", "--key", keys / "hub",
        "--schedule", f"periodic:{args.rounds}", "--local-epochs", args.local_epochs,
        "--batch-size", 32, "--lr", 0.1, "--seed", seed, "--min-sites", len(csvs),
        "--max-weight-share", 1.0)  # fmt: skip
    enroll_sites(hub, keys, work, csvs)
    for r in range(args.rounds):
        name = f"ml-r{r:04d}.safetensors"
        for site in csvs:
            package = work / site / "packages" / name
            for suffix in ("", ".sig"):
                Path(f"{package}{suffix}").write_bytes(
                    (hub / "packages" / f"{name}{suffix}").read_bytes()
                )
            cli("train", package, "--site", work / site, "--device", "cpu", "--workers", 0)
            bundle = work / site / "outbox" / f"ml-r{r:04d}-{site}.safetensors"
            for suffix in ("", ".sig"):
                (hub / "inbox" / f"{bundle.name}{suffix}").write_bytes(
                    Path(f"{bundle}{suffix}").read_bytes()
                )
        cli("aggregate", hub, "--key", keys / "hub")
    final = hub / "packages" / f"ml-r{args.rounds:04d}.safetensors"
    out = json.loads(cli("evaluate", final, "--hub", hub, "--data", test, "--json"))
    return {f: float(out["per_class"][f]["auroc"]) for f in FINDINGS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-epochs", type=int, default=2)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    x, y = make_table()
    rng = np.random.default_rng(TABLE_SEED + 1)
    order = rng.permutation(len(y))
    test_idx, train_idx = np.sort(order[:750]), np.sort(order[750:])
    results: dict[str, list[dict[str, float]]] = {"federated": [], "pooled": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        test = write_csv(root / "test.csv", x[test_idx], y[test_idx])
        for seed in seeds:
            site_of = deal(x[train_idx], seed)
            csvs = {}
            for k, site in enumerate(SITES):
                rows = train_idx[site_of == k]
                csvs[site] = write_csv(root / f"s{seed}-{site}.csv", x[rows], y[rows])
                prevalence = ", ".join(f"{v:.2f}" for v in y[rows].mean(axis=0))
                print(f"seed {seed} {site}: {len(rows)} rows, prevalence {prevalence}", flush=True)
            pooled = {"site-a": write_csv(root / f"s{seed}-pooled.csv", x[train_idx], y[train_idx])}
            results["federated"].append(federation(root / f"f{seed}", csvs, test, seed, args))
            results["pooled"].append(federation(root / f"p{seed}", pooled, test, seed, args))
            print(
                f"seed {seed}: federated {results['federated'][-1]}, pooled {results['pooled'][-1]}",
                flush=True,
            )
    print()
    print("| finding | pooled AUROC | federated AUROC | federated - pooled |")
    print("| --- | --- | --- | --- |")
    for f in FINDINGS:
        pooled = np.array([r[f] for r in results["pooled"]])
        fed = np.array([r[f] for r in results["federated"]])
        gap = fed - pooled
        print(
            f"| {f} | {pooled.mean():.3f} ± {pooled.std(ddof=1):.3f} "
            f"| {fed.mean():.3f} ± {fed.std(ddof=1):.3f} "
            f"| {gap.mean():+.3f} (min {gap.min():+.3f}, max {gap.max():+.3f}) |"
        )


if __name__ == "__main__":
    main()
