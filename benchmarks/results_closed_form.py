"""Results: the one-trip closed-form head against periodic FedAvg of the same head, over seeds.

Usage: python benchmarks/results_closed_form.py [--seeds 1,2,3] [--tune-seed 0] [--rounds 20]

Data: the bundled digits; 20% test (stratified), and 15% of the rest a disjoint "public"
split that no site holds, on which the start model (the FedAvg CNN at small width) is
pretrained for 20 epochs, as ``hub init --init-weights`` would ship it. The backbone (both
convolutions and the hidden dense layer) is then frozen: only the head, the last linear
layer, is learned, by

- closed-form ridge / NCM: ``--schedule closed-form``, one statistics round (1 trip);
- periodic FedAvg of the head: 1 or R rounds of E = 1, SGD (momentum 0.9);
- centralized: the head trained on the pooled site data for R epochs.

Tuning (benchmarks/tuning.py), on the tuning seed: the batch size and learning rate of each
trained arm (1 trip, R trips, centralized, each on its own) come from the same grid, and
the ridge LAMBDA from ``RIDGE_LAMBDAS``, chosen by accuracy on a validation split held out
from the sites' data; the test set is never used to choose.

Every arm runs through ``flsilo simulate``'s functions (sim_kit.simulate.run_simulation),
which use the real site and hub code. Scenarios: 10 sites holding two digits each
(``shards:2``), and 2 sites whose images differ (site 1 inverted; the public split is not).
Prints markdown tables: mean and sample standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tuning import TEST_SEED, SitePlan, best, grid, mean_sd, pooled, say, validation_split

from flsilo.plans.plan import Plan
from sim_kit.simulate import SimData, SimSettings, load_sim_data, run_simulation, start_model
from site_kit.evaluation import evaluate
from site_kit.training import train

CPU = torch.device("cpu")
CNN = "cnn:channels=16x32,hidden=128"
BACKBONE = ("0.*", "3.*", "7.*")
RIDGE_LAMBDAS = (0.1, 1.0, 10.0)
SCENARIOS = {
    "10 sites, two digits each (shards:2)": {"sites": 10, "partition": "shards:2"},
    "2 sites, site 1's images inverted": {"sites": 2, "shifts": ("none", "invert")},
}


Arm = Callable[[Any], float]


def base_settings(seed: int, scenario: dict, rounds: int) -> SimSettings:
    plan = Plan(local_epochs=1, batch_size=32, seed=seed, freeze=BACKBONE)
    return SimSettings(
        schedule=f"periodic:{rounds}",
        model=CNN,
        plan=plan,
        pretrain_fraction=0.15,
        pretrain_epochs=20,
        baselines=False,
        test_seed=TEST_SEED,
        **scenario,
    )


def _centralized(base: SimSettings, data: SimData, epochs: int) -> float:
    model = start_model(base, data)
    train(model, pooled(data), replace(base.plan, local_epochs=epochs), seed=base.seed, device=CPU)
    return evaluate(model, data.test, len(data.classes), CPU).accuracy


def arms(base: SimSettings, data: SimData, rounds: int) -> dict[str, tuple[Sequence | None, Arm]]:
    """label -> function(choice) -> accuracy on data.test; choice: a SitePlan or a LAMBDA."""

    def closed(solver: str) -> float:
        s = replace(base, schedule="closed-form", plan=replace(base.plan, head_solver=solver))
        return run_simulation(s, data).accuracy[1]

    def periodic(g: SitePlan, r: int) -> float:
        return run_simulation(
            replace(base, schedule=f"periodic:{r}", plan=g.apply(base.plan)), data
        ).accuracy[-1]

    return {
        "pretrained start (its public head)": (
            None,
            lambda _c: (
                evaluate(start_model(base, data), data.test, len(data.classes), CPU).accuracy
            ),
        ),
        "closed-form ridge": (RIDGE_LAMBDAS, lambda lam: closed(f"ridge:{lam:g}")),
        "closed-form NCM": (None, lambda _c: closed("ncm")),
        "periodic FedAvg of the head, 1 trip": (grid(), lambda g: periodic(g, 1)),
        f"periodic FedAvg of the head, {rounds} trips": (grid(), lambda g: periodic(g, rounds)),
        f"centralized head ({rounds} epochs, pooled)": (
            grid(),
            lambda g: _centralized(replace(base, plan=g.apply(base.plan)), data, rounds),
        ),
    }


TRIPS = {
    "closed-form ridge": "1",
    "closed-form NCM": "1",
    "pretrained start (its public head)": "0",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the raw figures here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    raw: dict[str, dict] = {}
    for title, scenario in SCENARIOS.items():
        base = base_settings(args.tune_seed, scenario, args.rounds)
        val = validation_split(load_sim_data(base), base.seed)
        chosen = {}
        for label, (options, fn) in arms(base, val, args.rounds).items():
            say(f"# tune {title}: {label}")
            chosen[label] = None if options is None else best(options, fn, say)
        rows: dict[str, list[float]] = {}
        for seed in seeds:
            base = base_settings(seed, scenario, args.rounds)
            for label, (_o, fn) in arms(base, load_sim_data(base), args.rounds).items():
                rows.setdefault(label, []).append(fn(chosen[label]))
        raw[title] = {"chosen": {k: str(v) for k, v in chosen.items()}, "rows": rows}
        print(
            f"\n{title}; seeds {args.seeds}, chosen on the validation split of seed {args.tune_seed}\n"
        )
        print("| head | chosen on validation | test accuracy, mean ± sd | per seed |")
        print("| --- | --- | ---: | --- |")
        for label, values in rows.items():
            c = chosen[label]
            text = "—" if c is None else (f"LAMBDA {c:g}" if isinstance(c, float) else f"E=1 {c}")
            if label.startswith("centralized"):
                text = text.replace("E=1 ", "")
            each = " / ".join(f"{100 * v:.1f}" for v in values)
            print(f"| {label} | {text} | {mean_sd(values)}% | {each} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"seeds": seeds, "tune_seed": args.tune_seed, **raw}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
