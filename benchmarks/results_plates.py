"""Results: licence plates from two camera setups (``--task sequence``), over seeds.

Usage: python benchmarks/results_plates.py DATA [--seeds 1,2,3] [--epochs 20] [--jobs 3]
       [--arms pooled,one-shot,fedavg] [--eval CSV] [--out DIR]

DATA is a folder written by ``benchmarks/plates.py`` (``site-a``, ``site-b``, ``test``):
site A's camera crops the plate tightly, site B's wide, tilted and darker; the test set
holds both setups' crops, half each. Every arm trains the ``crnn`` model with the same plan
(Adam, ``--lr``, the crops stretched to 1 x 32 x 128 and normalised by 0.5/0.25) from the
same seeded start, for the same total local epochs per site
(``--epochs``). The sites train with half the pooled model's batch size
(``--site-batch-size`` 8 against ``--batch-size`` 16), so that every arm takes as many
optimizer steps per epoch: two sites' averaged steps of 8 samples are, to first order, one
step of 16.

- pooled: one model on both sites' crops together (what a central data set would give);
- each site alone;
- periodic FedAvg: ``--epochs`` rounds of one local epoch at each site, the hub averaging
  by sample count;
- one-shot: the two sites' models of the "alone" arm, averaged once (one trip).

Sites train with site_kit's training loop and the sequence task's CTC loss; the hub's
average is hub_kit's own streaming aggregator fed from memory (``sim_kit.simulate.hub_round``,
as ``flsilo simulate`` does); the figures are the sequence task's evaluator (exact-string
accuracy, character error rate), overall and per camera setup, and after every pooled epoch
and every FedAvg round (the curves). One plan for every arm: its only tuned knobs (crops per
site, epochs) are chosen for both arms at once by a one-seed pilot scored on a validation set
(``--eval``: crops ``plates.py`` renders with another seed, never the test set; see
``docs/results.md``). Prints markdown (mean ± sample standard deviation over the seeds) and
writes one JSON file per seed into ``--out``; ``--jobs`` runs each seed's arms in forked
processes, one core each (the figures are the same either way).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from flsilo.models.registry import build_model
from flsilo.plans.federation import DataSpec, HubPolicy
from flsilo.plans.plan import Plan, TaskSpec
from flsilo.plans.preprocessing import Preprocess
from flsilo.tasks import load_task
from sim_kit.simulate import hub_round
from site_kit.data import Dataset
from site_kit.data.samples import open_samples
from site_kit.evaluation import evaluate
from site_kit.training import EpochReport, ProgressCallback, derive_seed, train

CHARSET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
MAX_LENGTH = 8
SHAPE = (1, 32, 128)
NORMALIZE = "0.5/0.25"
SPEC = TaskSpec("sequence", (), CHARSET, MAX_LENGTH)
CPU = torch.device("cpu")


def load(csv_path: Path, limit: int | None) -> Dataset:
    """A manifest read by the site's own adapter and the plan's preprocessing, in memory."""
    samples = open_samples(
        csv_path, "images-csv", (), SHAPE, DataSpec(), preprocess=Preprocess(normalize=NORMALIZE),
        task=SPEC,
    )  # fmt: skip
    n = len(samples) if limit is None else min(limit, len(samples))
    x = np.stack([samples.sample(k).reshape(SHAPE) for k in range(n)]).astype(np.float32)
    y = np.empty(n, dtype=object)
    for k in range(n):
        y[k] = samples.target(k)
    return Dataset(x, y, task=SPEC)


def pooled_of(parts: list[Dataset]) -> Dataset:
    y = np.empty(sum(len(p) for p in parts), dtype=object)
    y[:] = [t for p in parts for t in p.y]
    return Dataset(np.concatenate([p.x for p in parts]), y, task=SPEC)


def score(model: torch.nn.Module, test: Dataset, half: int) -> dict[str, float]:
    """Exact match and CER on the whole test set and on each camera setup's half."""
    out: dict[str, float] = {}
    for name, part in (
        ("", test),
        ("a_", test.subset(np.arange(half))),
        ("b_", test.subset(np.arange(half, len(test)))),
    ):
        ev = evaluate(model, part, len(CHARSET) + 1, CPU, task="sequence", classes=(), spec=SPEC)
        out[f"{name}exact_match"] = ev.values["exact_match"]
        out[f"{name}cer"] = ev.values["cer"]
    return out


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_seed(
    seed: int, sites: list[Dataset], test: Dataset, args: argparse.Namespace, arms: set[str]
) -> dict:
    plan = Plan(
        local_epochs=1,
        batch_size=args.batch_size,
        optimizer="adam",
        lr=args.lr,
        seed=seed,
        task="sequence",
        charset=CHARSET,
        max_length=MAX_LENGTH,
        preprocess=Preprocess(normalize=NORMALIZE),
    )
    torch.manual_seed(seed)
    model = build_model(args.model, SHAPE, load_task("sequence").output_size((), SPEC))
    start = state_of(model)
    half = len(test) // 2
    long_plan = replace(plan, local_epochs=args.epochs)
    site_plan = replace(plan, batch_size=args.site_batch_size)
    site_long = replace(site_plan, local_epochs=args.epochs)
    result: dict = {"seed": seed, "epochs": args.epochs, "model": args.model}
    started = time.process_time()

    if "pooled" in arms:
        model.load_state_dict(start)
        pooled_curve: list[float] = []
        watch = epoch_scorer(model, test, pooled_curve, f"seed {seed} pooled epoch")
        train(model, pooled_of(sites), long_plan, seed=seed, device=CPU, progress=watch)
        result["pooled"] = score(model, test, half)
        result["pooled_curve"] = pooled_curve
        say(f"seed {seed} pooled {result['pooled']}")
    if "one-shot" in arms:
        result.update(alone_and_one_shot(model, start, sites, test, site_long, seed))
    if "fedavg" in arms:
        result.update(fedavg(model, start, sites, test, site_plan, seed, args.epochs))
    result["cpu_seconds"] = round(time.process_time() - started, 1)
    return result


def epoch_scorer(
    model: torch.nn.Module, test: Dataset, curve: list[float], label: str
) -> ProgressCallback:
    """A progress callback that scores the model on ``test`` after every epoch.

    Scoring leaves training as it was: every epoch sets the model to training mode and
    reseeds torch's generator before its first batch, and the network holds no running
    statistics, so the curve's last point is the finished model's figure.
    """

    def watch(report: object) -> None:
        if isinstance(report, EpochReport):
            ev = evaluate(
                model, test, len(CHARSET) + 1, CPU, task="sequence", classes=(), spec=SPEC
            )
            curve.append(ev.values["exact_match"])
            say(f"{label} {report.epoch}: exact {curve[-1]:.3f}")

    return watch


def alone_and_one_shot(
    model: torch.nn.Module,
    start: dict[str, torch.Tensor],
    sites: list[Dataset],
    test: Dataset,
    site_long: Plan,
    seed: int,
) -> dict:
    """Each site's model trained alone, and their one-shot average."""
    result: dict = {}
    half = len(test) // 2
    alone = []
    for i, data in enumerate(sites):
        model.load_state_dict(start)
        train(model, data, site_long, seed=derive_seed(seed, f"site-{i}"), device=CPU)
        alone.append(state_of(model))
        result[f"alone_{'ab'[i]}"] = score(model, test, half)
    weights = [float(len(d)) for d in sites]
    model.load_state_dict(hub_round(start, alone, weights, HubPolicy()))
    result["one_shot"] = score(model, test, half)
    say(f"seed {seed} one-shot {result['one_shot']}")
    return result


def fedavg(
    model: torch.nn.Module,
    start: dict[str, torch.Tensor],
    sites: list[Dataset],
    test: Dataset,
    site_plan: Plan,
    seed: int,
    rounds: int,
) -> dict:
    """Periodic FedAvg: ``rounds`` rounds of one local epoch at each site."""
    weights = [float(len(d)) for d in sites]
    state = start
    curve = []
    for r in range(rounds):
        states = []
        round_plan = replace(site_plan, seed=seed + r)
        for i, data in enumerate(sites):
            model.load_state_dict(state)
            train(model, data, round_plan, seed=derive_seed(seed + r, f"site-{i}"), device=CPU)
            states.append(state_of(model))
        state = hub_round(state, states, weights, HubPolicy())
        model.load_state_dict(state)
        ev = evaluate(model, test, len(CHARSET) + 1, CPU, task="sequence", classes=(), spec=SPEC)
        curve.append(ev.values["exact_match"])
        say(f"seed {seed} fedavg round {r + 1}: exact {curve[-1]:.3f}")
    return {"fedavg": score(model, test, len(test) // 2), "fedavg_curve": curve}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


ARMS = [
    ("pooled", "pooled (both sites' crops in one place)", "—"),
    ("alone_a", "site A alone (tight crops)", "0"),
    ("alone_b", "site B alone (wide crops)", "0"),
    ("one_shot", "one-shot averaging", "1"),
    ("fedavg", "periodic FedAvg (E = 1)", "{epochs}"),
]


def table(results: list[dict]) -> str:
    def cell(arm: str, key: str) -> str:
        values = np.array([100 * r[arm][key] for r in results])
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        each = " / ".join(f"{v:.1f}" for v in values)
        return f"{values.mean():.1f} ± {sd:.1f} ({each})"

    epochs = results[0]["epochs"]
    lines = [
        "| arm | trips | exact match, % | site A crops | site B crops | CER, % |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm, label, trips in ARMS:
        if arm not in results[0]:
            continue
        lines.append(
            f"| {label} | {trips.format(epochs=epochs)} | {cell(arm, 'exact_match')} | "
            f"{cell(arm, 'a_exact_match')} | {cell(arm, 'b_exact_match')} | {cell(arm, 'cer')} |"
        )
    return "\n".join(lines)


FORKED: dict = {}
"""The data and arguments every seed shares, set before workers fork (never sent to them)."""


def run_forked(task: tuple[int, str]) -> dict:
    seed, arm = task
    return run_seed(seed, FORKED["sites"], FORKED["test"], FORKED["args"], {arm})


def merge(parts: list[dict]) -> list[dict]:
    """One result per seed from its arms' results (in the order of the seeds)."""
    merged: dict[int, dict] = {}
    for part in parts:
        seed = merged.setdefault(part["seed"], {**part, "cpu_seconds": 0.0})
        seed.update({k: v for k, v in part.items() if k != "cpu_seconds"})
        seed["cpu_seconds"] = round(seed["cpu_seconds"] + part["cpu_seconds"], 1)
    return list(merged.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--per-site", type=int, default=None, help="use the first N crops")
    parser.add_argument("--batch-size", type=int, default=16, help="the pooled model's")
    parser.add_argument(
        "--site-batch-size", type=int, default=8, help="each site's: as many steps per epoch"
    )
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--model", default="crnn:channels=8x16x32,hidden=48,width_pools=3")
    parser.add_argument("--arms", default="pooled,one-shot,fedavg", help="a comma list of these")
    parser.add_argument(
        "--eval", type=Path, default=None, help="score on this manifest (default DATA/test)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="(seed, arm) pairs run at once, one core each"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sites = [load(args.data / s / "labels.csv", args.per_site) for s in ("site-a", "site-b")]
    test = load(args.eval or args.data / "test" / "labels.csv", None)
    say(f"sites {[len(s) for s in sites]}, test {len(test)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    FORKED.update(sites=sites, test=test, args=args)
    # Each (seed, arm) is a task: every arm starts from the seed's own seeded model, so
    # running them apart, in forked workers that inherit the data, changes no figure.
    tasks = [(seed, arm) for seed in seeds for arm in args.arms.split(",")]
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(min(args.jobs, len(tasks))) as pool:
            results = merge(pool.map(run_forked, tasks, chunksize=1))
    else:
        results = merge([run_forked(task) for task in tasks])
    for result in results:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"seed{result['seed']}.json").write_text(
                json.dumps(result, indent=1) + "\n"
            )
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
