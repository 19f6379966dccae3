"""Results: rounds to reach 95% of centralized with ten sites holding two digits each.

Usage: python benchmarks/results_shards.py [--seeds 1,2,3] [--tune-seed 0] [--cap 60] [--out F]
       python benchmarks/results_shards.py --central B:LR --fixed METHOD:E:B:LR[:EXTRA] ...
       (no tuning: report the given settings, e.g. a runner-up on validation)

The bundled digits, 20% held out as the test set; the rest sorted by label and cut into 20
shards, two per site (``shards:2``, as in the FedAvg paper). Hub methods: fedavg, fedprox,
fedavgm (momentum 0.9), fedadam and fedyogi (betas 0.9/0.99, tau 0.001). Centralized: the
pooled site data, ``--central-epochs`` epochs from the same seeded start; the target is 95%
of its accuracy.

Tuning (benchmarks/tuning.py), on the tuning seed only: each method's local epochs, batch
size and learning rate come from the same grid, then its server learning rate (FedProx: its
mu), chosen on a validation split held out from the sites' data, by the fewest rounds to 95%
of the tuned centralized model's validation accuracy (ties: the higher accuracy then);
centralized takes its batch size and learning rate from the same grid by validation
accuracy. A run stops at the target, or at ``--cap`` rounds (reported as "> cap").

Sites train with site_kit's training loop; the hub runs in memory through
``hub_kit.inmemory`` (the streaming aggregator itself), as ``flsilo simulate`` does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tuning import (
    FEDPROX_MUS,
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
from sim_kit.simulate import HubMemory, SimData, SimSettings, hub_round, load_sim_data, start_model
from site_kit.evaluation import evaluate
from site_kit.training import derive_seed, train

CPU = torch.device("cpu")
METHODS = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi")
EXTRA = {"fedprox": FEDPROX_MUS, **SERVER_LRS}
DEFAULT_EXTRA = {"fedprox": 0.01, "fedavgm": 1.0, "fedadam": 0.03, "fedyogi": 0.03}


def settings(seed: int) -> SimSettings:
    plan = Plan(local_epochs=1, batch_size=10, lr=0.02, seed=seed)
    return SimSettings(
        sites=10,
        partition="shards:2",
        model="cnn:channels=16x32,hidden=128",
        plan=plan,
        test_seed=TEST_SEED,
    )


class Federation:
    """One data split and one seeded start; runs centralized and round-by-round federations."""

    def __init__(self, base: SimSettings, data: SimData) -> None:
        self.base, self.data = base, data
        self.model = start_model(base, data)
        self.start = {k: v.clone() for k, v in self.model.state_dict().items()}

    def _acc(self) -> float:
        return evaluate(self.model, self.data.test, len(self.data.classes), CPU).accuracy

    def centralized(self, site: SitePlan, epochs: int) -> float:
        plan = replace(site.apply(self.base.plan), local_epochs=epochs)
        self.model.load_state_dict(self.start)
        train(self.model, pooled(self.data), plan, seed=plan.seed, device=CPU)
        return self._acc()

    def rounds(
        self, method: str, site: SitePlan, extra: float | None, target: float, cap: int
    ) -> tuple[int | None, list[float]]:
        """Rounds until test accuracy >= target (None: not within cap), and the curve."""
        plan = site.apply(self.base.plan)
        if method == "fedprox":
            plan, hub = replace(plan, fedprox_mu=extra or 0.0), HubPolicy()
        elif method == "fedavg":
            hub = HubPolicy()
        else:
            hub = HubPolicy(server_optimizer=method, server_lr=extra)
        state, memory, curve = self.start, HubMemory(), []
        for r in range(cap):
            states, weights = [], []
            p = replace(plan, seed=plan.seed + r)
            for i, data in enumerate(self.data.sites):
                self.model.load_state_dict(state)
                train(self.model, data, p, seed=derive_seed(p.seed, f"site-{i}"), device=CPU)
                states.append({k: v.clone() for k, v in self.model.state_dict().items()})
                weights.append(float(len(data)))
            state = hub_round(state, states, weights, hub, None, memory)
            self.model.load_state_dict(state)
            curve.append(self._acc())
            if curve[-1] >= target:
                return r + 1, curve
        return None, curve


Choice = tuple[SitePlan, float | None]


def _pick(
    fed: Federation, method: str, options: list[Choice], target: float, cap: int
) -> tuple[Choice, int | None]:
    """Fewest rounds to target (ties: higher accuracy then); runs stop at the best so far."""
    best_key: tuple[int, float] | None = None
    chosen, chosen_rounds = options[0], None
    for site, extra in options:
        limit = cap if best_key is None or best_key[0] > cap else best_key[0]
        rounds, curve = fed.rounds(method, site, extra, target, limit)
        key = (rounds if rounds is not None else cap + 1, -curve[-1])
        extra_text = "" if extra is None else f" extra {extra:g}"
        say(
            f"#   {method} {site}{extra_text}: rounds {rounds} (limit {limit}), acc {curve[-1]:.4f}"
        )
        if best_key is None or key < best_key:
            best_key, chosen, chosen_rounds = key, (site, extra), rounds
    return chosen, chosen_rounds


def tune(
    base: SimSettings, cap: int, central_epochs: int, methods: tuple[str, ...] = METHODS
) -> tuple[SitePlan, dict[str, Choice]]:
    fed = Federation(base, validation_split(load_sim_data(base), base.seed))
    say("# tune centralized")
    central = best(grid(), lambda g: fed.centralized(g, central_epochs), say)
    target = 0.95 * fed.centralized(central, central_epochs)
    say(f"# validation target {target:.4f}")
    chosen: dict[str, Choice] = {}
    sites = sorted(grid(free_epochs=True), key=lambda g: -(g.local_epochs or 1))
    for method in methods:
        default = DEFAULT_EXTRA.get(method)
        (site, _), _ = _pick(fed, method, [(g, default) for g in sites], target, cap)
        if method in EXTRA:
            others = [(site, v) for v in EXTRA[method]]
            chosen[method], _ = _pick(fed, method, others, target, cap)
        else:
            chosen[method] = (site, None)
        say(f"# chosen {method}: {chosen[method]}")
    return central, chosen


def _fixed(spec: str) -> tuple[str, Choice]:
    method, e, b, lr, *extra = spec.split(":")
    site = SitePlan(float(lr), int(b), int(e))
    return method, (site, float(extra[0]) if extra else DEFAULT_EXTRA.get(method))


def _text(choice: Choice, method: str) -> str:
    site, extra = choice
    if extra is None:
        return str(site)
    return f"{site}, {'mu' if method == 'fedprox' else 'server lr'} {extra:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--cap", type=int, default=60)
    parser.add_argument("--central-epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the raw figures here (JSON)")
    parser.add_argument("--central", help="B:LR of centralized, instead of tuning it")
    parser.add_argument("--fixed", action="append", help="METHOD:E:B:LR[:EXTRA], no tuning")
    parser.add_argument("--methods", default=",".join(METHODS), help="the hub methods to tune")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.fixed:
        b, lr = args.central.split(":")
        central, chosen = SitePlan(float(lr), int(b)), dict(_fixed(f) for f in args.fixed)
    else:
        methods = tuple(args.methods.split(","))
        central, chosen = tune(settings(args.tune_seed), args.cap, args.central_epochs, methods)
    seeds = [int(s) for s in args.seeds.split(",")]
    cent: list[float] = []
    rounds: dict[str, list[int | None]] = {m: [] for m in chosen}
    curves: dict[str, list[list[float]]] = {m: [] for m in chosen}
    for seed in seeds:
        base = settings(seed)
        fed = Federation(base, load_sim_data(base))
        cent.append(fed.centralized(central, args.central_epochs))
        for method in chosen:
            r, curve = fed.rounds(method, *chosen[method], 0.95 * cent[-1], args.cap)
            rounds[method].append(r)
            curves[method].append(curve)
            say(f"# seed {seed} {method}: {r} rounds")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        raw = {
            "seeds": seeds,
            "tune_seed": args.tune_seed,
            "cap": args.cap,
            "centralized": {"chosen": str(central), "accuracy": cent},
            "chosen": {m: _text(c, m) for m, c in chosen.items()},
            "rounds": rounds,
            "curves": curves,
        }
        args.out.write_text(json.dumps(raw) + "\n")
    print(f"\nseeds {args.seeds}; settings chosen on the validation split of seed {args.tune_seed}")
    print(f"centralized ({args.central_epochs} epochs, {central}): {mean_sd(cent)}%\n")
    print("| hub method | chosen on validation | rounds to 95% (per seed) | mean | vs FedAvg |")
    print("| --- | --- | --- | ---: | ---: |")
    for method in chosen:
        rs = rounds[method]
        each = " / ".join(f"> {args.cap}" if r is None else str(r) for r in rs)
        done = [r for r in rs if r is not None]
        mean = f"{statistics.mean(done):.1f}" if len(done) == len(rs) else "—"
        ratios = [
            f"{r / f:.2f}" if r is not None and f is not None else "?"
            for r, f in zip(rs, rounds.get("fedavg", [None] * len(rs)), strict=True)
        ]
        print(
            f"| {method} | {_text(chosen[method], method)} | {each} | {mean} | {' / '.join(ratios)} |"
        )


if __name__ == "__main__":
    main()
