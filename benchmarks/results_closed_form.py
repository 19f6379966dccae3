"""Results: the one-trip closed-form head against periodic FedAvg of the same head, over seeds.

Usage: python benchmarks/results_closed_form.py [--seeds 0,1,2] [--rounds 20] [--lrs 0.01,0.05,0.2]

Data: the bundled digits; 20% test (stratified), and 15% of the rest a disjoint "public"
split that no site holds, on which the start model (the FedAvg CNN at small width) is
pretrained for 20 epochs, as ``hub init --init-weights`` would ship it. The backbone (both
convolutions and the hidden dense layer) is then frozen: only the head, the last linear
layer, is learned, by

- closed-form ridge / NCM: ``--schedule closed-form``, one statistics round (1 trip);
- periodic FedAvg of the head: R rounds of E = 1, B = 32, SGD (momentum 0.9), its learning
  rate the best of ``--lrs`` on the test set (an upper bound for that arm);
- centralized: the head trained on the pooled site data for R epochs, same lr choice.

Every arm runs through ``flsilo simulate``'s functions (sim_kit.simulate.run_simulation),
which use the real site and hub code. Scenarios: 10 sites holding two digits each
(``shards:2``), and 2 sites whose images differ (site 1 inverted; the public split is not).
Prints markdown tables: mean and sample standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from flsilo.plan import Plan
from sim_kit.simulate import SimData, SimSettings, load_sim_data, run_simulation

CNN = "cnn:channels=16x32,hidden=128"
BACKBONE = ("0.*", "3.*", "7.*")
SCENARIOS = {
    "10 sites, two digits each (shards:2)": {"sites": 10, "partition": "shards:2"},
    "2 sites, site 1's images inverted": {"sites": 2, "shifts": ("none", "invert")},
}


def _final(settings: SimSettings, data: SimData) -> tuple[float, float, float]:
    """(accuracy after round 1, after the last round, centralized) of one run."""
    res = run_simulation(settings, data)
    return res.accuracy[1], res.accuracy[-1], res.centralized or float("nan")


def one_seed(seed: int, scenario: dict, rounds: int, lrs: list[float]) -> dict[str, float]:
    plan = Plan(local_epochs=1, batch_size=32, seed=seed, freeze=BACKBONE)
    base = SimSettings(
        schedule=f"periodic:{rounds}",
        model=CNN,
        plan=plan,
        pretrain_fraction=0.15,
        pretrain_epochs=20,
        **scenario,
    )
    data = load_sim_data(base)
    start = run_simulation(replace(base, schedule="closed-form", baselines=False), data)
    ncm = replace(plan, head_solver="ncm")
    periodic = [_final(replace(base, plan=replace(plan, lr=lr)), data) for lr in lrs]
    return {
        "pretrained start (its public head)": start.accuracy[0],
        "closed-form ridge, 1 trip": start.accuracy[1],
        "closed-form NCM, 1 trip": run_simulation(
            replace(base, schedule="closed-form", plan=ncm, baselines=False), data
        ).accuracy[1],
        "periodic FedAvg of the head, 1 trip": max(p[0] for p in periodic),
        f"periodic FedAvg of the head, {rounds} trips": max(p[1] for p in periodic),
        f"centralized head ({rounds} epochs, pooled)": max(p[2] for p in periodic),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lrs", default="0.01,0.05,0.2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    for title, scenario in SCENARIOS.items():
        runs = [one_seed(s, scenario, args.rounds, lrs) for s in seeds]
        print(f"\n{title}; seeds {args.seeds}\n")
        print("| head | test accuracy, mean ± sd | per seed |")
        print("| --- | ---: | --- |")
        for arm in runs[0]:
            values = [100 * r[arm] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            each = " / ".join(f"{v:.1f}" for v in values)
            print(f"| {arm} | {statistics.mean(values):.1f}% ± {sd:.1f} | {each} |")


if __name__ == "__main__":
    main()
