"""Accuracy against each site's total epsilon, and DP-SGD's training-time cost (docs/results.md).

For each data set, budget and seed it runs ``sim_kit``'s simulation (the federation's own
training loop, Opacus and accountant) and prints one JSON line. The federation fixes one
noise multiplier: the smallest that keeps the *smallest* site within the budget over all
rounds (larger sites then spend less). Non-private runs are the baseline, same settings.

    nice -n 10 .venv/bin/python benchmarks/dp_results.py --out dp-results.jsonl
    .venv/bin/python benchmarks/dp_results.py --table dp-results.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from flsilo.plans.plan import Plan
from sim_kit.simulate import DataSource, SimSettings, load_sim_data, run_simulation
from site_kit.privacy import noise_for_epsilon

DELTA = 1e-5
BUDGETS = (1.0, 3.0, 8.0, math.inf)


def breast_cancer_npz(folder: Path) -> DataSource:
    """scikit-learn's Wisconsin breast cancer table (569 patients, 30 features), z-scored."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    path = folder / "breast_cancer.npz"
    np.savez(path, x=x, y=y.astype(np.int64))
    return DataSource(path, "npz", ("malignant", "benign"), (30,))


def settings_for(name: str, sites: int, seed: int) -> SimSettings:
    plan = Plan(local_epochs=1, batch_size=32, lr=0.1, seed=seed)
    model = "logreg" if name == "breast-cancer" else "mlp:hidden=64"
    return SimSettings(sites=sites, schedule="periodic:5", model=model, plan=plan, baselines=False)


def with_budget(settings: SimSettings, budget: float, smallest_site: int) -> SimSettings:
    if math.isinf(budget):
        return settings
    p = settings.plan
    q = min(1.0, p.batch_size / smallest_site)
    steps = settings.rounds() * p.local_epochs * math.ceil(smallest_site / p.batch_size)
    sigma = noise_for_epsilon(budget, DELTA, q, steps)
    plan = replace(p, dp_noise_multiplier=sigma, dp_budget=budget, dp_delta=DELTA, dp_clip=1.0)
    return replace(settings, plan=plan)


def run(out: Path, seeds: list[int], site_counts: list[int]) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, out.open("a") as fh:
        sources = {"digits": None, "breast-cancer": breast_cancer_npz(Path(tmp))}
        for name, source in sources.items():
            for sites in site_counts:
                for seed in seeds:
                    base = settings_for(name, sites, seed)
                    data = load_sim_data(base, source)
                    smallest = min(len(d) for d in data.sites)
                    for budget in BUDGETS:
                        settings = with_budget(base, budget, smallest)
                        started = time.perf_counter()
                        result = run_simulation(settings, data)
                        row = {
                            "data": name,
                            "sites": sites,
                            "site_samples": [len(d) for d in data.sites],
                            "seed": seed,
                            "budget": None if math.isinf(budget) else budget,
                            "sigma": settings.plan.dp_noise_multiplier,
                            "accuracy": result.accuracy[-1],
                            "epsilon_spent": result.dp_epsilon,
                            "train_seconds": result.train_seconds,
                            "wall_seconds": time.perf_counter() - started,
                        }
                        fh.write(json.dumps(row) + "\n")
                        fh.flush()
                        print(json.dumps(row), file=sys.stderr)


def table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["sites"], r["budget"] or math.inf), []).append(r)
    print(
        "| data | sites (train samples each) | total epsilon per site | sigma | test accuracy (mean ± sd) | max epsilon spent | training time vs no DP |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (name, sites, budget), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])
    ):
        acc = [r["accuracy"] for r in rs]
        base = groups[(name, sites, math.inf)]
        ratio = statistics.mean(r["train_seconds"] for r in rs) / statistics.mean(
            r["train_seconds"] for r in base
        )
        spent = max(
            (max(r["epsilon_spent"].values()) for r in rs if r["epsilon_spent"]), default=None
        )
        sizes = rs[0]["site_samples"]
        print(
            f"| {name} | {sites} ({min(sizes)}–{max(sizes)}) | {'no DP' if math.isinf(budget) else f'{budget:g}'} "
            f"| {statistics.mean(r['sigma'] for r in rs):.2f} | {100 * statistics.mean(acc):.1f}% ± {100 * statistics.stdev(acc):.1f} "
            f"| {'-' if spent is None else f'{spent:.2f}'} | {ratio:.1f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--table", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sites", default="3,10")
    args = parser.parse_args()
    if args.table:
        table(args.table)
        return
    assert args.out, "--out or --table"
    run(args.out, [int(s) for s in args.seeds.split(",")], [int(s) for s in args.sites.split(",")])


if __name__ == "__main__":
    main()
