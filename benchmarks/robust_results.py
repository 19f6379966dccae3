"""Robust rules under attack and their cost when all are honest, on the digits data set.

Usage: python benchmarks/robust_results.py [--seeds 0,1,2] [--rounds 8] [--out FILE.json]

Each run is a federation simulated in memory with the hub's own rules (hub_kit.inmemory,
the same coefficients and combination the streaming aggregator writes): sites train with
site_kit's training loop; f of K sites are attackers whose updates are validly signed but
- scaled:       their honest update times 10;
- sign-flipped: their honest update times -4;
- random:       Gaussian noise with 10x the honest update's norm;
- label-flip:   honest training on labels y -> 9 - y.
Configurations: f = 1 of 5 and f = 2 of 10 sites, IID; and all honest with a non-IID split
(Dirichlet 0.3), and all honest IID for reference. Reported: test accuracy of the final model (mean and spread over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from flsilo.models.registry import build_model
from flsilo.plans.plan import Plan
from hub_kit.inmemory import combine_states
from hub_kit.strategies import parse_strategy
from sim_kit.datasets import load_digits
from sim_kit.partition import partition, train_test_split
from site_kit.data import Dataset
from site_kit.evaluation import evaluate
from site_kit.training import derive_seed, train

MODEL = "mlp:hidden=64"
ATTACKS = ("none", "scaled", "sign-flip", "random", "label-flip")


def rules(f: int, k: int, honest_norm: float) -> list[str]:
    return [
        "fedavg",
        "median",
        "trimmed-mean:0.2",
        f"multi-krum:{f}",
        f"norm-bound:{honest_norm:.3g}",
        f"centered-clip:{honest_norm:.3g}",
        "geomedian",
        f"median-of-means:{min(k, 2 * f + 1)}",
    ]


def arrays(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {n: v.detach().cpu().numpy().copy() for n, v in state.items()}


def attack(kind: str, base: dict, trained: dict, rng: np.random.Generator) -> dict:
    out = {}
    for n, b in base.items():
        if not np.issubdtype(b.dtype, np.floating):
            out[n] = trained[n]
            continue
        u = trained[n].astype(np.float64) - b
        if kind == "scaled":
            u = 10 * u
        elif kind == "sign-flip":
            u = -4 * u
        elif kind == "random":
            u = rng.normal(0, 10 * (np.linalg.norm(u) / np.sqrt(u.size) + 1e-12), u.shape)
        out[n] = (b + u).astype(b.dtype)
    return out


def run(
    seed: int, k: int, f: int, kind: str, split: str, rule: str, rounds: int
) -> tuple[float, list[float]]:
    torch.manual_seed(seed)
    x, y = load_digits()
    train_idx, test_idx = train_test_split(y, 0.2, seed)
    parts = partition(y[train_idx], k, split, seed)
    sites = [Dataset(x[train_idx][p], y[train_idx][p]) for p in parts]
    flipped = [Dataset(d.x, (9 - d.y).astype(d.y.dtype)) for d in sites]
    test = Dataset(x[test_idx], y[test_idx])
    model = build_model(MODEL, tuple(x.shape[1:]), 10)
    plan = Plan(local_epochs=1, batch_size=32, lr=0.05, seed=seed)
    state = {n: v.clone() for n, v in model.state_dict().items()}
    strategy = parse_strategy(rule)
    rng = np.random.default_rng(seed + 1000)
    norms: list[float] = []
    cpu = torch.device("cpu")
    for r in range(rounds):
        base = arrays(state)
        updates, weights = [], []
        for i, data in enumerate(sites):
            attacker = i >= k - f and kind != "none"
            model.load_state_dict(state)
            train_data = flipped[i] if attacker and kind == "label-flip" else data
            train(
                model,
                train_data,
                replace(plan, seed=seed + r),
                seed=derive_seed(seed + r, f"site-{i}"),
                device=cpu,
            )
            trained = arrays(model.state_dict())
            if attacker and kind != "label-flip":
                trained = attack(kind, base, trained, rng)
            elif not attacker:
                norms.append(
                    float(np.sqrt(sum(np.sum((trained[n] - base[n]) ** 2.0) for n in base)))
                )
            updates.append(trained)
            weights.append(float(len(data)))
        combined = combine_states(base, updates, weights, strategy)
        state = {n: torch.from_numpy(v) for n, v in combined.items()}
    model.load_state_dict(state)
    return evaluate(model, test, 10, cpu).accuracy, norms


def _cell(accs: list[float]) -> str:
    return f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.pstdev(accs):.1f}"


def report(data: dict) -> str:
    """Markdown tables of a results file: attacks by rule, then the honest non-IID cost."""
    res = data["results"]
    lines = []
    attacks = [a for a in ATTACKS if a != "none"]
    for k, f in ((5, 1), (10, 2)):
        lines += [f"\nf = {f} of K = {k} sites attack (IID split):\n"]
        lines += ["| rule | " + " | ".join(attacks) + " | no attack |"]
        lines += ["| --- |" + " ---: |" * (len(attacks) + 1)]
        honest = [x for x in res if x["K"] == k and x["f"] == 0 and x["split"] == "iid"]
        attacked = [x for x in res if x["K"] == k and x["f"] == f and x["attack"] == "scaled"]
        for i, row in enumerate(attacked):
            cells = [
                _cell(
                    next(
                        x["accuracy"]
                        for x in res
                        if x["K"] == k
                        and x["f"] == f
                        and x["attack"] == a
                        and x["rule"] == row["rule"]
                    )
                )
                for a in attacks
            ]
            cells.append(_cell(honest[i]["accuracy"]) if i < len(honest) else "-")
            lines += [f"| `{row['rule']}` | " + " | ".join(cells) + " |"]
    confs = [(5, "iid"), (5, "dirichlet:0.3"), (10, "dirichlet:0.3")]
    lines += ["\nAll sites honest: accuracy (difference to `fedavg`):\n"]
    lines += ["| rule | " + " | ".join(f"K = {k}, {s}" for k, s in confs) + " |"]
    lines += ["| --- |" + " ---: |" * len(confs)]
    base = [x for x in res if x["f"] == 0 and x["K"] == 5 and x["split"] == "iid"]
    for i, row in enumerate(base):
        cells = []
        for k, s in confs:
            rows = [x for x in res if x["f"] == 0 and x["K"] == k and x["split"] == s]
            acc, fed = rows[i]["accuracy"], rows[0]["accuracy"]
            delta = 100 * (statistics.mean(acc) - statistics.mean(fed))
            cells.append(f"{_cell(acc)} ({delta:+.1f})")
        lines += [f"| `{row['rule']}` | " + " | ".join(cells) + " |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--report", type=Path, default=None, help="print the tables of a results file"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("robust-results.json"))
    args = parser.parse_args()
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    # The honest update norm (median over sites and rounds of an honest IID FedAvg run)
    # sets C and TAU, the way an operator reads them off the `norm` column.
    _, norms = run(seeds[0], 5, 0, "none", "iid", "fedavg", args.rounds)
    honest = statistics.median(norms)
    print(f"honest update norm (median): {honest:.3g}", flush=True)
    # (K, attackers, attack, split, F the rules are set for)
    configs = [(5, 1, kind, "iid", 1) for kind in ATTACKS if kind != "none"]
    configs += [(10, 2, kind, "iid", 2) for kind in ATTACKS if kind != "none"]
    configs += [
        (5, 0, "none", "iid", 1),
        (10, 0, "none", "iid", 2),
        (5, 0, "none", "dirichlet:0.3", 1),
        (10, 0, "none", "dirichlet:0.3", 2),
    ]
    results = []
    started = time.perf_counter()
    for k, f, kind, split, defend in configs:
        for rule in rules(defend, k, honest):
            accs = [run(s, k, f, kind, split, rule, args.rounds)[0] for s in seeds]
            results.append(
                {"K": k, "f": f, "attack": kind, "split": split, "rule": rule, "accuracy": accs}
            )
            print(
                f"K={k} f={f} {kind:10s} {split:14s} {rule:22s} "
                f"{100 * statistics.mean(accs):5.1f}% ± {100 * statistics.pstdev(accs):.1f} "
                f"[{time.perf_counter() - started:.0f}s]",
                flush=True,
            )
            args.out.write_text(
                json.dumps(
                    {
                        "honest_norm": honest,
                        "rounds": args.rounds,
                        "seeds": seeds,
                        "results": results,
                    },
                    indent=1,
                )
            )


if __name__ == "__main__":
    main()
