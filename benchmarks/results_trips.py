"""Results: what one, two and three trips buy with each hub method, over seeds.

Usage: python benchmarks/results_trips.py [--seeds 1,2,3] [--tune-seed 0] [--epochs 12]
       python benchmarks/results_trips.py --clinical [--seeds 1,2,3]

Scenario (default): the bundled digits, two sites of similar size, site 1's images
inverted; the test set holds both kinds. Every arm spends the same total local epochs
(``--epochs``, per site) from the same seeded start, B = 32, SGD lr 0.05 momentum 0.9:

- local only and centralized (pooled data), ``--epochs`` epochs;
- one trip: each site trains all epochs, then one-shot averaging, or Fisher merging;
- two and three trips (E = epochs/2, epochs/3) with each server optimizer
  (none = FedAvg, fedavgm, fedadam, fedyogi); the server learning rate of each is the best
  of a small grid on the tuning seed (``--tune-seed``, a different data split from the
  reported seeds), at three trips;
- periodic FedAvg, E = 1 (``--epochs`` trips).

``--clinical``: scikit-learn's breast cancer table (569 patients, 30 features, log1p),
standardised with one shared recipe (log1p, then the table's mean and sd: the reference
statistics a consortium would publish), split across three hospitals by a Dirichlet(0.5)
label skew, an MLP (one hidden layer of 32); same arms.

Sites train with site_kit's training loop; the hub runs in memory through
``hub_kit.inmemory`` (the streaming aggregator itself), as ``flsilo simulate`` does.
Prints markdown: mean ± sample standard deviation over the seeds, with the tuned lrs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace

import numpy as np
import torch

from flsilo.federation import HubPolicy
from flsilo.plan import Plan
from sim_kit.simulate import (
    DataSource,
    HubMemory,
    SimData,
    SimSettings,
    hub_round,
    load_sim_data,
    start_model,
)
from site_kit.data import Dataset
from site_kit.evaluation import evaluate
from site_kit.fisher import diagonal_fisher
from site_kit.training import derive_seed, train

CPU = torch.device("cpu")
GRID = {"none": [1.0], "fedavgm": [0.5, 1.0], "fedadam": [0.003, 0.01, 0.03]}
GRID["fedyogi"] = GRID["fedadam"]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _acc(model: torch.nn.Module, state: dict, data: SimData) -> float:
    model.load_state_dict(state)
    return evaluate(model, data.test, len(data.classes), CPU).accuracy


def _site_models(
    model: torch.nn.Module, start: dict, plan: Plan, data: SimData, r: int, fisher: bool = False
) -> tuple[list[dict], list[float], list[dict]]:
    states, weights, fishers = [], [], []
    for i, site in enumerate(data.sites):
        model.load_state_dict(start)
        p = replace(plan, seed=plan.seed + r)
        train(model, site, p, seed=derive_seed(p.seed, f"site-{i}"), device=CPU)
        states.append(_state(model))
        weights.append(float(len(site)))
        if fisher:
            seed = derive_seed(p.seed, f"site-{i}")
            fishers.append(diagonal_fisher(model, site, CPU, seed=seed))
    return states, weights, fishers


def _trips(
    model: torch.nn.Module, start: dict, plan: Plan, data: SimData, trips: int, hub: HubPolicy
) -> float:
    state, memory = start, HubMemory()
    for r in range(trips):
        states, weights, _ = _site_models(model, state, plan, data, r)
        state = hub_round(state, states, weights, hub, None, memory)
    return _acc(model, state, data)


def _hub(name: str, lr: float) -> HubPolicy:
    return HubPolicy(server_optimizer=name, server_lr=None if name == "none" else lr)


def one_seed(base: SimSettings, epochs: int, lrs: dict[str, float], source) -> dict[str, float]:
    data = load_sim_data(base, source)
    model = start_model(base, data)
    start = _state(model)
    plan = replace(base.plan, local_epochs=epochs)
    out: dict[str, float] = {}
    for i, site in enumerate(data.sites):
        model.load_state_dict(start)
        train(model, site, plan, seed=derive_seed(plan.seed, f"site-{i}"), device=CPU)
        out[f"site {i} alone"] = evaluate(model, data.test, len(data.classes), CPU).accuracy
    pooled = Dataset(
        np.concatenate([d.x for d in data.sites]), np.concatenate([d.y for d in data.sites])
    )
    model.load_state_dict(start)
    train(model, pooled, plan, seed=plan.seed, device=CPU)
    out["centralized (pooled data)"] = evaluate(model, data.test, len(data.classes), CPU).accuracy
    states, weights, fishers = _site_models(model, start, plan, data, 0, fisher=True)
    avg = hub_round(start, states, weights, HubPolicy())
    out["1 trip: one-shot averaging"] = _acc(model, avg, data)
    fish = hub_round(start, states, weights, HubPolicy(), fishers)
    out["1 trip: one-shot Fisher merging"] = _acc(model, fish, data)
    for trips in (2, 3):
        e = max(1, epochs // trips)
        for name, lr in lrs.items():
            label = f"{trips} trips (E={e}): {name}"
            out[label] = _trips(
                model, start, replace(plan, local_epochs=e), data, trips, _hub(name, lr)
            )
    out[f"{epochs} trips (E=1): periodic FedAvg"] = _trips(
        model, start, replace(plan, local_epochs=1), data, epochs, HubPolicy()
    )
    return out


def tune(base: SimSettings, epochs: int, source) -> dict[str, float]:
    """Each server optimizer's lr: the best on the tuning seed at three trips."""
    data = load_sim_data(base, source)
    model = start_model(base, data)
    start = _state(model)
    plan = replace(base.plan, local_epochs=max(1, epochs // 3))
    best = {}
    for name, grid in GRID.items():
        scores = {lr: _trips(model, start, plan, data, 3, _hub(name, lr)) for lr in grid}
        best[name] = max(scores, key=lambda lr: scores[lr])
        print(f"# tune {name}: {scores}", flush=True)
    return best


def settings(seed: int, clinical: bool) -> tuple[SimSettings, DataSource | None]:
    plan = Plan(local_epochs=1, batch_size=32, lr=0.05, seed=seed)
    if not clinical:
        s = SimSettings(
            sites=2, shifts=("none", "invert"), model="cnn:channels=16x32,hidden=128", plan=plan
        )
        return s, None
    from pathlib import Path

    path = Path("/tmp/flsilo-breast-cancer.npz")
    if not path.exists():
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        x = np.log1p(x)
        x = (x - x.mean(axis=0)) / x.std(axis=0)  # one published recipe every hospital applies
        np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))
    source = DataSource(path, "npz", ("malignant", "benign"), (30,))
    s = SimSettings(sites=3, partition="dirichlet:0.5", model="mlp:hidden=32", plan=plan)
    return s, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--clinical", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base, source = settings(args.tune_seed, args.clinical)
    lrs = tune(base, args.epochs, source)
    rows: dict[str, list[float]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        base, source = settings(seed, args.clinical)
        for k, v in one_seed(base, args.epochs, lrs, source).items():
            rows.setdefault(k, []).append(v)
        print(f"# seed {seed} done", flush=True)
    print(json.dumps({"lrs": lrs, "rows": rows}))
    print(f"\nserver lr (tuned on seed {args.tune_seed}): {lrs}\n")
    print("| arm | test accuracy (mean ± sd) |\n| --- | ---: |")
    for k, v in rows.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {k} | {100 * statistics.mean(v):.1f} ± {100 * sd:.1f}% |")


if __name__ == "__main__":
    main()
