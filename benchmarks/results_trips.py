"""Results: what one, two and three trips buy with each hub method, over seeds.

Usage: python benchmarks/results_trips.py [--seeds 1,2,3] [--tune-seed 0] [--epochs 12] [--out F]
       python benchmarks/results_trips.py --pretrained [--seeds 1,2,3]
       python benchmarks/results_trips.py --clinical [--seeds 1,2,3]

Scenario (default): the bundled digits, two sites of similar size, site 1's images
inverted; the test set holds both kinds. Every arm spends the same total local epochs
(``--epochs``, per site) from the same seeded start, SGD momentum 0.9:

- local only and centralized (pooled data), ``--epochs`` epochs;
- one trip: each site trains all epochs, then one-shot averaging, or Fisher merging;
- two and three trips (E = epochs/2, epochs/3) with each server optimizer
  (none = FedAvg, fedavgm, fedadam, fedyogi);
- periodic FedAvg, E = 1 (``--epochs`` trips).

Tuning (benchmarks/tuning.py): every arm's learning rate and batch size come from the same
grid, chosen by accuracy on a validation split held out from the sites' training data of
the tuning seed (``--tune-seed``); then each server optimizer's learning rate, the same
way. The test set is never used to choose. The reported seeds train on all site data.

``--pretrained``: the same two sites, but every arm (centralized included) starts from a
backbone pretrained for 20 epochs on a disjoint "public" 15% of the training data (plain
images only; no site holds it); two more arms: the closed-form ridge head on that backbone
(1 trip, LAMBDA chosen on validation from {0.1, 1, 10}), and that head followed by two
trips of FedAvg on the whole model (3 trips).

``--clinical``: scikit-learn's breast cancer table (569 patients, 30 features, log1p),
standardised with one shared recipe (log1p, then the table's mean and sd: the reference
statistics a consortium would publish), split across three hospitals by a Dirichlet(0.5)
label skew, an MLP (one hidden layer of 32); same arms.

Sites train with site_kit's training loop; the hub runs in memory through
``hub_kit.inmemory`` (the streaming aggregator itself), as ``flsilo simulate`` does.
Prints markdown: mean ± sample standard deviation over the seeds, with the chosen settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tuning import (
    SERVER_LRS,
    TEST_SEED,
    SitePlan,
    best,
    grid,
    mean_sd,
    pooled,
    say,
    validation_split,
)

from flsilo.plans.federation import HubPolicy
from flsilo.plans.plan import Plan
from sim_kit.heads import solve_closed_form_head
from sim_kit.simulate import (
    DataSource,
    HubMemory,
    SimData,
    SimSettings,
    hub_round,
    load_sim_data,
    start_model,
)
from site_kit.evaluation import evaluate
from site_kit.fisher import diagonal_fisher
from site_kit.training import derive_seed, train

CPU = torch.device("cpu")
RIDGE_LAMBDAS = (0.1, 1.0, 10.0)
OPTIMIZERS = ("none", "fedavgm", "fedadam", "fedyogi")
DEFAULT_SERVER_LR = {"fedavgm": 1.0, "fedadam": 0.03, "fedyogi": 0.03}


@dataclass(frozen=True)
class Arm:
    label: str
    trips: int
    kind: str  # alone | central | average | fisher | trips | closed-form
    site: int = 0
    optimizer: str = "none"
    local_epochs: int = 0


def arms(sites: int, epochs: int, pretrained: bool = False) -> list[Arm]:
    out = [Arm(f"site {i} alone", 0, "alone", site=i, local_epochs=epochs) for i in range(sites)]
    out.append(Arm("centralized (pooled data)", 0, "central", local_epochs=epochs))
    out.append(Arm("one-shot averaging", 1, "average", local_epochs=epochs))
    out.append(Arm("one-shot Fisher merging", 1, "fisher", local_epochs=epochs))
    if pretrained:
        out.append(Arm("closed-form ridge head", 1, "closed-form", local_epochs=0))
        e = max(1, epochs // 2)
        out.append(Arm(f"closed-form head, then FedAvg E = {e}", 3, "closed-form", local_epochs=e))
    for trips in (2, 3):
        e = max(1, epochs // trips)
        for name in OPTIMIZERS:
            label = f"{'FedAvg' if name == 'none' else name}, E = {e}"
            out.append(Arm(label, trips, "trips", optimizer=name, local_epochs=e))
    out.append(Arm("periodic FedAvg, E = 1", epochs, "trips", local_epochs=1))
    return out


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


class Runner:
    """Runs arms on one data split from one seeded start; shares the one-trip site models."""

    def __init__(self, base: SimSettings, data: SimData) -> None:
        self.base, self.data = base, data
        self.model = start_model(base, data)
        self.start = _state(self.model)
        self._alone: dict[tuple, tuple[list[dict], list[float], list[dict]]] = {}

    def _acc(self, state: dict[str, torch.Tensor]) -> float:
        self.model.load_state_dict(state)
        return evaluate(self.model, self.data.test, len(self.data.classes), CPU).accuracy

    def _site_models(
        self, state: dict, plan: Plan, r: int, fisher: bool
    ) -> tuple[list[dict], list[float], list[dict]]:
        states, weights, fishers = [], [], []
        p = replace(plan, seed=plan.seed + r)
        for i, site in enumerate(self.data.sites):
            self.model.load_state_dict(state)
            seed = derive_seed(p.seed, f"site-{i}")
            train(self.model, site, p, seed=seed, device=CPU)
            states.append(_state(self.model))
            weights.append(float(len(site)))
            if fisher:
                fishers.append(diagonal_fisher(self.model, site, CPU, seed=seed))
        return states, weights, fishers

    def run(self, arm: Arm, site: SitePlan, server_lr: float | None) -> float:
        plan = replace(site.apply(self.base.plan), local_epochs=arm.local_epochs)
        if arm.kind == "central":
            self.model.load_state_dict(self.start)
            train(self.model, pooled(self.data), plan, seed=plan.seed, device=CPU)
            return self._acc(_state(self.model))
        if arm.kind in ("alone", "average", "fisher"):
            key = (plan.lr, plan.batch_size, plan.local_epochs)
            if key not in self._alone:
                self._alone[key] = self._site_models(self.start, plan, 0, fisher=True)
            states, weights, fishers = self._alone[key]
            if arm.kind == "alone":
                return self._acc(states[arm.site])
            merged = hub_round(
                self.start, states, weights, HubPolicy(), fishers if arm.kind == "fisher" else None
            )
            return self._acc(merged)
        state, first = self.start, 0
        if arm.kind == "closed-form":  # server_lr holds the ridge LAMBDA
            self.model.load_state_dict(self.start)
            solve_closed_form_head(
                self.model, self.data.sites, len(self.data.classes), f"ridge:{server_lr:g}"
            )
            state, first, server_lr = _state(self.model), 1, None
        hub = HubPolicy(server_optimizer=arm.optimizer, server_lr=server_lr)
        memory = HubMemory()
        for r in range(first, arm.trips):
            states, weights, _ = self._site_models(state, plan, r, fisher=False)
            state = hub_round(state, states, weights, hub, None, memory)
        return self._acc(state)


Choice = tuple[SitePlan, float | None]


def tune(
    base: SimSettings, source: DataSource | None, epochs: int, pretrained: bool
) -> dict[str, Choice]:
    """Each arm's site plan, then its server lr: the best on the tuning seed's validation split."""
    runner = Runner(base, validation_split(load_sim_data(base, source), base.seed))
    chosen: dict[str, Choice] = {}
    for arm in arms(base.sites, epochs, pretrained):
        say(f"# tune {arm.label} ({arm.trips} trips)")
        server = 1.0 if arm.kind == "closed-form" else DEFAULT_SERVER_LR.get(arm.optimizer)
        others = RIDGE_LAMBDAS if arm.kind == "closed-form" else SERVER_LRS.get(arm.optimizer)
        site = (
            best(grid(), lambda g, a=arm, s=server: runner.run(a, g, s), say)
            if arm.local_epochs
            else grid()[0]  # the 1-trip closed-form head trains nothing
        )
        if others is not None:
            server = best(others, lambda v, a=arm, g=site: runner.run(a, g, v), say)
        chosen[arm.label] = (site, server)
    return chosen


def settings(
    seed: int, clinical: bool, pretrained: bool = False
) -> tuple[SimSettings, DataSource | None]:
    plan = Plan(local_epochs=1, batch_size=32, lr=0.05, seed=seed)  # lr, B: pretraining only
    if not clinical:
        s = SimSettings(
            sites=2,
            shifts=("none", "invert"),
            model="cnn:channels=16x32,hidden=128",
            plan=plan,
            test_seed=TEST_SEED,
        )
        if pretrained:  # the backbone results_closed_form.py uses, on the same public split
            s = replace(s, pretrain_fraction=0.15, pretrain_epochs=20)
        return s, None
    path = Path("/tmp/flsilo-breast-cancer.npz")
    if not path.exists():
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        x = np.log1p(x)
        x = (x - x.mean(axis=0)) / x.std(axis=0)  # one published recipe every hospital applies
        np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))
    source = DataSource(path, "npz", ("malignant", "benign"), (30,))
    s = SimSettings(
        sites=3, partition="dirichlet:0.5", model="mlp:hidden=32", plan=plan, test_seed=TEST_SEED
    )
    return s, source


def _chosen_text(arm: Arm, choice: Choice) -> str:
    site, server = choice
    if arm.kind == "closed-form":
        lam = f"LAMBDA {server:g}"
        return lam if arm.local_epochs == 0 else f"{lam}, then E={arm.local_epochs} {site}"
    text = f"E={arm.local_epochs} {site}"
    return text if server is None else f"{text}, server lr {server:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--clinical", action="store_true")
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the raw figures here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base, source = settings(args.tune_seed, args.clinical, args.pretrained)
    chosen = tune(base, source, args.epochs, args.pretrained)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, list[float]] = {}
    for seed in seeds:
        base, source = settings(seed, args.clinical, args.pretrained)
        runner = Runner(base, load_sim_data(base, source))
        for arm in arms(base.sites, args.epochs, args.pretrained):
            rows.setdefault(arm.label, []).append(runner.run(arm, *chosen[arm.label]))
        say(f"# seed {seed} done")
    raw = {
        "seeds": seeds,
        "tune_seed": args.tune_seed,
        "chosen": {k: [str(s), v] for k, (s, v) in chosen.items()},
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(raw, indent=1) + "\n")
    print(
        f"\nseeds {args.seeds}; settings chosen on the validation split of seed {args.tune_seed}\n"
    )
    print("| arm | trips | chosen on validation | test accuracy (mean ± sd) | per seed |")
    print("| --- | ---: | --- | ---: | --- |")
    for arm in arms(base.sites, args.epochs, args.pretrained):
        v = rows[arm.label]
        each = " / ".join(f"{100 * a:.1f}" for a in v)
        trips = "—" if arm.trips == 0 else str(arm.trips)
        print(
            f"| {arm.label} | {trips} | {_chosen_text(arm, chosen[arm.label])} | {mean_sd(v)}% | {each} |"
        )


if __name__ == "__main__":
    main()
