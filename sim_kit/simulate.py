"""``flsilo simulate``: plan schedules on one machine with the federation's own code.

Sites train with site_kit's training loop and the hub combines their weights with hub_kit's
strategies (the same ``combine`` the streaming aggregator calls), in memory: no keys, files
or signatures, so a sweep of many schedules runs in minutes. Accuracy is measured on one
held-out test set that carries every site's preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from flsilo.errors import UsageError
from flsilo.manifest import Plan
from flsilo.models.registry import build_model
from hub_kit.schedule import parse_schedule
from hub_kit.strategies import parse_strategy
from sim_kit.datasets import DIGIT_CLASSES, load_digits
from sim_kit.partition import partition, shift, train_test_split
from site_kit.data import Dataset
from site_kit.evaluation import evaluate
from site_kit.training import derive_seed, train


@dataclass(frozen=True)
class SimSettings:
    sites: int = 2
    partition: str = "iid"
    shifts: tuple[str, ...] = ("none",)
    schedule: str = "periodic:10"
    local_epochs: int = 1
    batch_size: int = 32
    total_epochs: int | None = None
    model: str = "cnn:channels=16x32,hidden=128"
    optimizer: str = "sgd"
    lr: float = 0.05
    strategy: str = "fedavg"
    seed: int = 0
    target: float | None = None  # absolute test accuracy, or relative to centralized if < 0
    baselines: bool = True
    pretrain_fraction: float = (
        0.0  # share of training data no site holds, used for a pretrained start
    )
    pretrain_epochs: int = 5


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


@dataclass
class SimData:
    sites: list[Dataset]
    test: Dataset
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    public: Dataset | None = None


def load_sim_data(
    settings: SimSettings, data: tuple[np.ndarray, np.ndarray, tuple[str, ...]] | None
) -> SimData:
    x, y, classes = data if data is not None else (*load_digits(), DIGIT_CLASSES)
    train_idx, test_idx = train_test_split(y, 0.2, settings.seed)
    public = None
    if settings.pretrain_fraction > 0:
        keep, held = train_test_split(y[train_idx], settings.pretrain_fraction, settings.seed + 1)
        public_idx, train_idx = train_idx[held], train_idx[keep]
        public = Dataset(x[public_idx], y[public_idx])
    parts = partition(y[train_idx], settings.sites, settings.partition, settings.seed)
    shifts = [settings.shifts[i % len(settings.shifts)] for i in range(settings.sites)]
    sites = [
        Dataset(shift(x[train_idx][p], s), y[train_idx][p])
        for p, s in zip(parts, shifts, strict=True)
    ]
    kinds = sorted(set(shifts))
    test = Dataset(
        np.concatenate([shift(x[test_idx], s) for s in kinds]),
        np.concatenate([y[test_idx]] * len(kinds)),
    )
    return SimData(sites, test, classes, tuple(x.shape[1:]), public)


def _combine(
    states: list[dict[str, torch.Tensor]], weights: list[float], strategy_text: str
) -> dict[str, torch.Tensor]:
    strategy = parse_strategy(strategy_text)
    w = np.array(weights, dtype=np.float64)
    out = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            slices = [s[name].detach().cpu().double().numpy().ravel().copy() for s in states]
            out[name] = (
                torch.from_numpy(strategy.combine(slices, w)).to(first.dtype).reshape(first.shape)
            )
        else:
            out[name] = torch.stack([s[name] for s in states]).max(dim=0).values
    return out


def run_simulation(
    settings: SimSettings,
    data: SimData,
    say: Callable[[str], None] = lambda _m: None,
) -> SimResult:
    s = settings
    if s.total_epochs is not None:
        if s.total_epochs % s.local_epochs:
            raise UsageError(
                f"--total-epochs {s.total_epochs} is not a multiple of E={s.local_epochs}"
            )
        rounds = s.total_epochs // s.local_epochs
    else:
        rounds = parse_schedule(s.schedule, (s.local_epochs,)).rounds
    cpu = torch.device("cpu")
    torch.manual_seed(s.seed)
    model = build_model(s.model, data.input_shape, len(data.classes))
    if data.public is not None:  # a pretrained start, as --init-weights gives a real federation
        pre = Plan(
            local_epochs=s.pretrain_epochs,
            batch_size=s.batch_size,
            optimizer=s.optimizer,
            lr=s.lr,
            seed=s.seed,
        )
        train(model, data.public, pre, seed=s.seed, device=torch.device("cpu"))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    plan = Plan(
        local_epochs=s.local_epochs,
        batch_size=s.batch_size,
        optimizer=s.optimizer,
        lr=s.lr,
        seed=s.seed,
    )
    result = SimResult(settings=s, rounds=rounds)
    first = evaluate(model, data.test, len(data.classes), cpu)
    result.accuracy.append(first.accuracy)
    result.loss.append(first.loss)
    global_state = start
    for r in range(rounds):
        states, weights = [], []
        for i, site_data in enumerate(data.sites):
            if len(site_data) == 0:
                continue
            model.load_state_dict(global_state)
            train(
                model,
                site_data,
                replace(plan, seed=s.seed + r),
                seed=derive_seed(s.seed + r, f"site-{i}"),
                device=cpu,
            )
            states.append({k: v.clone() for k, v in model.state_dict().items()})
            weights.append(float(len(site_data)))
        global_state = _combine(states, weights, s.strategy)
        model.load_state_dict(global_state)
        ev = evaluate(model, data.test, len(data.classes), cpu)
        result.accuracy.append(ev.accuracy)
        result.loss.append(ev.loss)
        say(
            f"E={s.local_epochs} B={s.batch_size} round {r + 1}/{rounds}: test accuracy {100 * ev.accuracy:.1f}%"
        )
    total = rounds * s.local_epochs
    if s.baselines:
        long_plan = replace(plan, local_epochs=total)
        for i, site_data in enumerate(data.sites):
            model.load_state_dict(start)
            if len(site_data):
                train(
                    model, site_data, long_plan, seed=derive_seed(s.seed, f"site-{i}"), device=cpu
                )
            result.local_only[f"site-{i}"] = evaluate(
                model, data.test, len(data.classes), cpu
            ).accuracy
        pooled = Dataset(
            np.concatenate([d.x for d in data.sites]), np.concatenate([d.y for d in data.sites])
        )
        model.load_state_dict(start)
        train(model, pooled, long_plan, seed=s.seed, device=cpu)
        result.centralized = evaluate(model, data.test, len(data.classes), cpu).accuracy
    if s.target is not None:
        target = s.target if s.target > 0 else (-s.target) * (result.centralized or math.nan)
        result.target_accuracy = target
        result.rounds_to_target = next(
            (r for r, a in enumerate(result.accuracy) if a >= target), None
        )
    return result


def one_shot_average(settings: SimSettings, data: SimData) -> float:
    """Each site trains all epochs alone from the same start; the hub averages once."""
    one = replace(
        settings,
        local_epochs=settings.total_epochs or settings.local_epochs,
        total_epochs=None,
        schedule="one-shot",
        baselines=False,
    )
    return run_simulation(one, data).accuracy[-1]


def write_outputs(results: list[SimResult], out: Path) -> list[Path]:
    """CSV and JSON of every round of every run, and a PNG plot when matplotlib is installed."""
    import csv
    import json

    from flsilo.manifest import to_jsonable

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
                        res.settings.local_epochs,
                        res.settings.batch_size,
                        r,
                        r * res.settings.local_epochs,
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
        epochs = [r * res.settings.local_epochs for r in range(len(res.accuracy))]
        ax.plot(
            epochs,
            res.accuracy,
            marker="o",
            ms=3,
            label=f"E={res.settings.local_epochs} B={res.settings.batch_size}",
        )
    if results and results[0].centralized is not None:
        ax.axhline(results[0].centralized, color="k", ls="--", lw=1, label="centralized")
    ax.set_xlabel("total local epochs")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "simulate.png", dpi=110)
    plt.close(fig)
    written.append(out / "simulate.png")
    return written
