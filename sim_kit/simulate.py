"""``flsilo simulate``: plan schedules on one machine with the federation's own code.

Sites train with site_kit's training loop (and compute their Fisher diagonal with site_kit's
function when the plan merges by Fisher); the hub combines their weights with hub_kit's
streaming aggregator itself, fed from memory (``hub_kit.inmemory``): the same rules, Fisher
merge and server optimizer step and state as ``flsilo aggregate``. No keys, files or
signatures, so a sweep of many schedules runs in minutes. Accuracy is measured on one
held-out test set that carries every site's preprocessing.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from flsilo.models.registry import build_model
from flsilo.plans.federation import DataSpec, HubPolicy
from flsilo.plans.plan import (
    CLOSED_FORM,
    Plan,
    TaskSpec,
    dp_of,
    parse_schedule,
    plan_problem,
    task_spec,
    without_dp,
)
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.signing.claims import metric_name
from flsilo.tasks import Evaluation, output_size, task_for
from hub_kit.inmemory import aggregate_in_memory
from hub_kit.server_optimizers import server_optimizer_for
from hub_kit.strategies import parse_strategy
from sim_kit.datasets import DIGIT_CLASSES, load_digits
from sim_kit.heads import solve_closed_form_head
from sim_kit.partition import partition, shift, strata, train_test_split
from site_kit.data import Dataset
from site_kit.data.samples import load_dataset
from site_kit.evaluation import evaluate
from site_kit.fisher import diagonal_fisher
from site_kit.privacy import DPRun, Spend, epsilon, plan_spend
from site_kit.training import derive_seed, freeze_parameters, train


@dataclass(frozen=True)
class SimSettings:
    """One simulated federation: sites and data split, schedule, the sites' plan, hub rules."""

    sites: int = 2
    partition: str = "iid"
    shifts: tuple[str, ...] = ("none",)
    schedule: str = "periodic:10"
    total_epochs: int | None = None  # keep rounds x E fixed: rounds = total / E
    model: str = "cnn:channels=16x32,hidden=128"
    plan: Plan = field(default_factory=lambda: Plan(local_epochs=1, batch_size=32))
    hub: HubPolicy = field(default_factory=HubPolicy)
    target: float | None = None  # absolute test accuracy, or relative to centralized if < 0
    baselines: bool = True
    pretrain_fraction: float = 0.0  # share of training data no site holds, for a pretrained start
    pretrain_epochs: int = 5
    test_seed: int | None = None  # seeds the test split alone; None: the plan's seed

    @property
    def seed(self) -> int:
        return self.plan.seed

    def rounds(self) -> int:
        """Rounds of the periodic arm: total / E with --total-epochs, else the schedule's."""
        e = self.plan.local_epochs
        if self.total_epochs is not None:
            if self.total_epochs % e:
                raise UsageError(f"--total-epochs {self.total_epochs} is not a multiple of E={e}")
            return self.total_epochs // e + (1 if self.closed_form else 0)
        return parse_schedule(self.schedule, (e,)).rounds

    @property
    def closed_form(self) -> bool:
        """Round 0 is a statistics round that solves the head (closed-form schedules)."""
        return self.schedule.startswith(CLOSED_FORM)


@dataclass
class SimResult:
    settings: SimSettings
    rounds: int
    accuracy: list[float] = field(default_factory=list)  # after each round (index 0: start)
    loss: list[float] = field(default_factory=list)
    local_only: dict[str, float] = field(default_factory=dict)
    centralized: float | None = None
    rounds_to_target: int | None = None
    target_accuracy: float | None = None
    dp_epsilon: dict[str, float] = field(default_factory=dict)  # site -> total epsilon spent
    train_seconds: float = 0.0  # the sites' training time, summed over rounds
    metric: str = "accuracy"  # what ``accuracy`` holds: the task's primary metric
    values: dict[str, float] = field(default_factory=dict)  # the task's figures at the end
    centralized_values: dict[str, float] = field(default_factory=dict)


@dataclass
class SimData:
    sites: list[Dataset]
    test: Dataset
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    public: Dataset | None = None
    task: TaskSpec = field(default_factory=TaskSpec)


@dataclass(frozen=True)
class DataSource:
    """Data in a site format to simulate on, instead of the bundled handwritten digits."""

    path: Path
    data_format: str | None
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]


def split_indices(
    y: np.ndarray, settings: SimSettings
) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:
    """Indices of the test set, the pretraining share (or None) and each site's part.

    The test split is drawn with ``settings.test_seed`` when set, so that seeds which differ
    only in the plan's seed share one test set and their site data never reaches it."""
    test_seed = settings.seed if settings.test_seed is None else settings.test_seed
    train_idx, test_idx = train_test_split(y, 0.2, test_seed)
    public_idx = None
    if settings.pretrain_fraction > 0:
        keep, held = train_test_split(y[train_idx], settings.pretrain_fraction, settings.seed + 1)
        public_idx, train_idx = train_idx[held], train_idx[keep]
    parts = partition(y[train_idx], settings.sites, settings.partition, settings.seed)
    return test_idx, public_idx, [train_idx[p] for p in parts]


def load_sim_data(settings: SimSettings, source: DataSource | None = None) -> SimData:
    """Split the data into a test set, an optional pretraining share and one part per site."""
    spec = task_spec(settings.plan)
    if source is None:
        if spec != TaskSpec():
            raise UsageError(
                f"the bundled digits are labeled for classify, not {spec.name}",
                code=Code.BAD_CONFIG,
                hint="give --data with the task's targets (see docs/reference/data-formats.md)",
            )
        x, y = load_digits()
        classes: tuple[str, ...] = DIGIT_CLASSES
    else:
        dataset = load_dataset(
            source.path, source.data_format, source.classes, source.input_shape, DataSpec(),
            task=spec,
        )  # fmt: skip
        x, y, classes = dataset.x, dataset.y, source.classes
    test_idx, public_idx, parts = split_indices(strata(y), settings)

    def part(index: np.ndarray, how: str = "none") -> Dataset:
        return Dataset(shift(x[index], how), y[index], task=spec)

    public = None if public_idx is None else part(public_idx)
    shifts = [settings.shifts[i % len(settings.shifts)] for i in range(settings.sites)]
    sites = [part(p, s) for p, s in zip(parts, shifts, strict=True)]
    kinds = sorted(set(shifts))
    tests = [part(test_idx, s) for s in kinds]
    test = Dataset(
        np.concatenate([t.x for t in tests]), np.concatenate([t.y for t in tests]), task=spec
    )
    return SimData(sites, test, classes, tuple(x.shape[1:]), public, spec)


def _arrays(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


@dataclass
class HubMemory:
    """What the simulated hub keeps between rounds: the server optimizer's state bytes."""

    server_state: bytes | None = None


def hub_round(
    base: dict[str, torch.Tensor],
    states: list[dict[str, torch.Tensor]],
    weights: list[float],
    hub: HubPolicy,
    fishers: list[dict[str, torch.Tensor]] | None = None,
    memory: HubMemory | None = None,
) -> dict[str, torch.Tensor]:
    """The hub's round, through the streaming aggregator fed from memory."""
    opt = server_optimizer_for(hub)
    result = aggregate_in_memory(
        _arrays(base),
        [_arrays(s) for s in states],
        weights,
        parse_strategy(hub.strategy),
        fishers=[_arrays(f) for f in fishers] if fishers else None,
        server=opt,
        server_state=memory.server_state if memory else None,
    )
    if memory is not None:
        memory.server_state = result.server_state
    return {k: torch.from_numpy(v.copy()) for k, v in result.arrays.items()}


def start_model(s: SimSettings, data: SimData) -> torch.nn.Module:
    """The round-0 model: seeded, pretrained on the public share if any, then frozen per plan."""
    torch.manual_seed(s.seed)
    model = build_model(s.model, data.input_shape, output_size(data.task, data.classes))
    if data.public is not None:  # a pretrained start, as --init-weights gives a real federation
        pre = replace(without_dp(s.plan), local_epochs=s.pretrain_epochs)
        train(model, data.public, pre, seed=s.seed, device=torch.device("cpu"))
    freeze_parameters(model, s.plan.freeze)
    return model


def _training_round(
    model: torch.nn.Module,
    global_state: dict[str, torch.Tensor],
    s: SimSettings,
    data: SimData,
    r: int,
    ledgers: list[list[Spend]],
    result: SimResult,
    say: Callable[[str], None],
    memory: HubMemory,
) -> dict[str, torch.Tensor]:
    """Every site trains from ``global_state`` per the plan; the hub's strategy combines."""
    states, weights, fishers = [], [], []
    for i, site_data in enumerate(data.sites):
        if len(site_data) == 0:
            continue
        round_plan = replace(s.plan, seed=s.seed + r)
        dp_run = _private_round(round_plan, ledgers[i], len(site_data), f"site-{i}", r, say)
        if dp_of(s.plan) is not None and dp_run is None:
            continue  # this site has spent its budget
        model.load_state_dict(global_state)
        started = time.perf_counter()
        train(
            model,
            site_data,
            round_plan,
            seed=derive_seed(s.seed + r, f"site-{i}"),
            device=torch.device("cpu"),
            dp=dp_run,
        )
        result.train_seconds += time.perf_counter() - started
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        weights.append(float(len(site_data)))
        if round_plan.merge == "fisher":
            seed = derive_seed(round_plan.seed, f"site-{i}")
            fishers.append(diagonal_fisher(model, site_data, torch.device("cpu"), seed=seed))
    if not states:
        return global_state
    return hub_round(global_state, states, weights, s.hub, fishers or None, memory)


def run_simulation(
    settings: SimSettings,
    data: SimData,
    say: Callable[[str], None] = lambda _m: None,
) -> SimResult:
    s = settings
    rounds = s.rounds()
    cpu = torch.device("cpu")
    model = start_model(s, data)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    plan = s.plan
    result = SimResult(settings=s, rounds=rounds)
    ledgers: list[list[Spend]] = [[] for _ in data.sites]
    memory = HubMemory()
    result.metric = task_for(data.task).primary_metric
    first = _measure(model, data)
    result.accuracy.append(_primary(first, result.metric))
    result.loss.append(first.loss)
    global_state = start
    for r in range(rounds):
        model.load_state_dict(global_state)
        if s.closed_form and r == 0:
            solve_closed_form_head(model, data.sites, len(data.classes), plan.head_solver)
            global_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            global_state = _training_round(
                model, global_state, s, data, r, ledgers, result, say, memory
            )
        model.load_state_dict(global_state)
        ev = _measure(model, data)
        result.accuracy.append(_primary(ev, result.metric))
        result.loss.append(ev.loss)
        result.values = dict(ev.values)
        say(
            f"E={plan.local_epochs} B={plan.batch_size} round {r + 1}/{rounds}: "
            f"test {metric_name(result.metric)} {result.accuracy[-1]:.3f}"
        )
    dp = dp_of(plan)
    if dp is not None:
        result.dp_epsilon = {f"site-{i}": epsilon(led, dp.delta) for i, led in enumerate(ledgers)}
    # baselines train as many epochs as the training rounds (at least E: closed-form alone)
    total = max(rounds - (1 if s.closed_form else 0), 1) * plan.local_epochs
    if s.baselines:  # not private
        long_plan = replace(without_dp(plan), local_epochs=total)
        for i, site_data in enumerate(data.sites):
            model.load_state_dict(start)
            if len(site_data):
                train(
                    model, site_data, long_plan, seed=derive_seed(s.seed, f"site-{i}"), device=cpu
                )
            result.local_only[f"site-{i}"] = _primary(_measure(model, data), result.metric)
        pooled = Dataset(
            np.concatenate([d.x for d in data.sites]),
            np.concatenate([d.y for d in data.sites]),
            task=data.task,
        )
        model.load_state_dict(start)
        train(model, pooled, long_plan, seed=s.seed, device=cpu)
        central = _measure(model, data)
        result.centralized = _primary(central, result.metric)
        result.centralized_values = dict(central.values)
    if s.target is not None:
        target = s.target if s.target > 0 else (-s.target) * (result.centralized or math.nan)
        result.target_accuracy = target
        result.rounds_to_target = next(
            (r for r, a in enumerate(result.accuracy) if a >= target), None
        )
    return result


def _measure(model: torch.nn.Module, data: SimData) -> Evaluation:
    """The model on the test set, by the task (its figures in ``values``)."""
    cpu = torch.device("cpu")
    task = task_for(data.task)
    return evaluate(model, data.test, len(data.classes), cpu, task=task, classes=data.classes,
                    spec=data.task)  # fmt: skip


def _primary(ev: Evaluation, metric: str) -> float:
    return ev.accuracy if metric == "accuracy" else float(ev.values.get(metric, math.nan))


def _private_round(
    plan: Plan, ledger: list[Spend], n: int, site: str, round_: int, say: Callable[[str], None]
) -> DPRun | None:
    """A site's DP round as a real site runs it; None (with a message) past its budget."""
    dp = dp_of(plan)
    if dp is None:
        return None
    spend = plan_spend(plan, n)
    total = epsilon([*ledger, spend], dp.delta)
    if total > dp.budget:
        say(f"{site} refuses round {round_ + 1}: its epsilon would reach {total:.2f}")
        return None
    ledger.append(spend)
    # A simulation's noise is reproducible from its seed; a real site draws an os.urandom secret.
    secret = hashlib.sha256(f"{plan.seed}:{site}:{round_}".encode()).digest()
    return DPRun(spend, secret)


@dataclass(frozen=True)
class OneShot:
    """One-shot averaging given the same total local epochs as the periodic arm."""

    accuracy: float
    local_epochs: int


def one_shot_average(settings: SimSettings, data: SimData) -> OneShot:
    """Each site trains all epochs of the periodic arm alone from the same start; averaged once."""
    total = settings.rounds() * settings.plan.local_epochs
    one = replace(
        settings,
        plan=replace(settings.plan, local_epochs=total),
        total_epochs=None,
        schedule="one-shot",
        baselines=False,
    )
    return OneShot(run_simulation(one, data).accuracy[-1], total)


@dataclass
class SweepReport:
    """Every run of a sweep over (E, B), one-shot averaging if asked, and files written."""

    runs: list[SimResult]
    one_shot: OneShot | None
    files: list[Path]


def sweep(
    base: SimSettings,
    grid: list[tuple[int, int]],
    data: SimData,
    *,
    one_shot: bool = False,
    out: Path | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> SweepReport:
    """Simulate every (local epochs, batch size) in ``grid``; baselines once, with the first."""
    parse_strategy(base.hub.strategy)
    problem = plan_problem(base.plan)
    if problem is not None:
        raise UsageError(
            f"simulation settings are not valid: {problem}",
            code=Code.BAD_CONFIG,
            hint="fix the option of the same name",
        )
    if base.schedule.startswith("stats+"):
        raise UsageError(
            f"simulate does not run stats rounds ({base.schedule!r}): its sites' data is in "
            "memory, not files read by the plan's preprocessing",
            code=Code.BAD_SCHEDULE,
            hint="simulate the schedule after 'stats+', or run the federation with hub init",
        )
    runs = []
    for i, (e, b) in enumerate(grid):
        settings = replace(
            base,
            plan=replace(base.plan, local_epochs=e, batch_size=b),
            baselines=base.baselines and i == 0,
        )
        runs.append(run_simulation(settings, data, say))
    first = runs[0]
    if first.centralized is not None and base.target is not None and base.target < 0:
        for r in runs[1:]:
            r.centralized = first.centralized
            r.target_accuracy = -base.target * first.centralized
            r.rounds_to_target = next(
                (k for k, a in enumerate(r.accuracy) if a >= r.target_accuracy), None
            )
    shot = one_shot_average(first.settings, data) if one_shot else None
    files = write_outputs(runs, out) if out else []
    return SweepReport(runs, shot, files)


def write_outputs(results: list[SimResult], out: Path) -> list[Path]:
    """CSV and JSON of every round of every run, and a PNG plot when matplotlib is installed."""
    import csv
    import json

    from flsilo.format.manifest import to_jsonable

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "simulate.csv", out / "simulate.json"]
    with (out / "simulate.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["local_epochs", "batch_size", "round", "epochs_so_far", "test_accuracy", "test_loss"]
        )
        for res in results:
            for r, (acc, loss) in enumerate(zip(res.accuracy, res.loss, strict=True)):
                w.writerow(
                    [
                        res.settings.plan.local_epochs,
                        res.settings.plan.batch_size,
                        r,
                        r * res.settings.plan.local_epochs,
                        f"{acc:.5f}",
                        f"{loss:.5f}",
                    ]
                )
    (out / "simulate.json").write_text(json.dumps([to_jsonable(r) for r in results], indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    fig, ax = plt.subplots(figsize=(7, 4))
    for res in results:
        epochs = [r * res.settings.plan.local_epochs for r in range(len(res.accuracy))]
        ax.plot(
            epochs,
            res.accuracy,
            marker="o",
            ms=3,
            label=f"E={res.settings.plan.local_epochs} B={res.settings.plan.batch_size}",
        )
    if results and results[0].centralized is not None:
        ax.axhline(results[0].centralized, color="k", ls="--", lw=1, label="centralized")
    ax.set_xlabel("total local epochs")
    ax.set_ylabel(f"test {metric_name(results[0].metric)}" if results else "test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "simulate.png", dpi=110)
    plt.close(fig)
    written.append(out / "simulate.png")
    return written
