"""Results: object detection across two sites whose cameras sample frames differently.

Usage: python benchmarks/results_detect.py [--seeds 1,2,3] [--frames 150] [--rounds 4]
       [--local-epochs 2] [--pooled-epochs N] [--jobs 3] [--eval-rounds 3,6]
       [--arms pooled,fedavg]

Data: generated scenes (``sim_kit.scenes``, 128 x 128 pixels, circles, squares and
triangles pasted on textured backgrounds, boxes known exactly), in YOLO layout. Site A's
camera ("street") sees darker frames, smaller objects, more of them and mostly circles;
site B's ("yard") brighter frames, larger objects, fewer and mostly triangles. Each seed
draws ``--frames`` frames per site; the test set (``--test`` frames from each camera) is
the same for every seed. Both arms run the real command line (hub init --task detect,
enroll, kit, site init, train, aggregate, evaluate) with the built-in ``detector``, Adam and
the same batch size and learning rate:

- pooled: one site holding both sites' frames, one round of ``--pooled-epochs`` epochs
  (default ``rounds x local-epochs``: central training);
- periodic FedAvg: the two sites, ``--rounds`` rounds of ``--local-epochs`` epochs each.

A pooled epoch takes twice a site's optimizer steps (it holds both sites' frames), so
``--pooled-epochs`` = ``rounds x local-epochs / 2`` compares the arms at equal local steps.
``--eval-rounds`` also scores FedAvg's package after those rounds (a curve, on stderr);
``--arms`` runs one arm only (for pilots).

Every command runs with one torch thread and decodes in the main process (``--threads 1``,
``--workers 0``): the machine is shared; ``--jobs`` runs seeds side by side, and stopping
the script (SIGTERM, Ctrl-C) stops them. The figure is the final package's mAP@0.5 on the
test set (``flsilo evaluate --json``, ``map50``). Prints a markdown table: mean and sample
standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cli as run_cli
from common import enroll_sites
from workers import map_in_workers

from flsilo.signing.keys import generate_key, write_new_key
from sim_kit.scenes import SHAPES, write_scenes

cli = partial(run_cli, threads=1)  # every command on one thread: seeds run side by side

TEST_SEED = 2026
CAMERAS = {"site-a": "street", "site-b": "yard"}
ARMS = ("pooled", "periodic FedAvg")


def federation(
    work: Path, data: dict[str, Path], test: Path, rounds: int, epochs: int, args
) -> dict:
    keys = work / "keys"
    sites = tuple(data)
    for name in ("hub", *sites):
        write_new_key(keys / name, generate_key("ed25519"), None, name)
    hub = work / "hub"
    cli(
        "hub", "init", hub, "--federation", "scenes", "--task", "detect",
        "--model", f"detector:width={args.width}", "--classes", ",".join(SHAPES),
        "--input-shape", "3,128,128", "--key", keys / "hub", "--schedule", f"periodic:{rounds}",
        "--local-epochs", epochs, "--batch-size", args.batch_size, "--optimizer", "adam",
        "--lr", args.lr, "--seed", args.seed_plan, "--min-sites", len(sites), "--augment", "hflip",
    )  # fmt: skip
    enroll_sites(hub, keys, work, {site: data[site] for site in sites}, "--data-format", "yolo")
    for r in range(rounds):
        package = hub / "packages" / f"scenes-r{r:04d}.safetensors"
        for site in sites:
            local = work / site / "packages" / package.name
            for suffix in ("", ".sig"):
                shutil.copy(f"{package}{suffix}", f"{local}{suffix}")
            cli("train", local, "--site", work / site, "--device", "cpu", "--workers", "0")
            bundle = work / site / "outbox" / f"scenes-r{r:04d}-{site}.safetensors"
            for suffix in ("", ".sig"):
                shutil.copy(f"{bundle}{suffix}", hub / "inbox" / f"{bundle.name}{suffix}")
        cli("aggregate", hub)
        if r + 1 in args.eval_rounds and r + 1 < rounds:
            curve = evaluate(hub, r + 1, test)["map50"]
            print(f"seed {args.seed_plan} FedAvg round {r + 1}: mAP@0.5 {100 * curve:.1f}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return evaluate(hub, rounds, test)


def evaluate(hub: Path, round_: int, test: Path) -> dict:
    """``flsilo evaluate --json`` of the hub's package ``round_`` on the test frames."""
    package = hub / "packages" / f"scenes-r{round_:04d}.safetensors"
    args = ("--data", test, "--data-format", "yolo", "--json", "--workers", "0")
    report: dict = json.loads(cli("evaluate", package, "--hub", hub, *args))
    return report


def merge(dest: Path, *sources: Path) -> Path:
    for sub in ("images", "labels"):
        (dest / sub).mkdir(parents=True)
        for n, src in enumerate(sources):
            for f in sorted((src / sub).iterdir()):
                shutil.copy(f, dest / sub / f"{n}-{f.name}")
    return dest


def run_seed(seed: int, args, test: Path) -> dict[str, float]:
    out = {}
    args.seed_plan = seed
    with tempfile.TemporaryDirectory(prefix="detect-") as tmp:
        work = Path(tmp)
        data = {
            site: write_scenes(work / f"data-{site}", args.frames, seed=seed, camera=camera)
            for site, camera in CAMERAS.items()
        }
        pooled = merge(work / "data-pooled", *data.values())
        total = args.pooled_epochs or args.rounds * args.local_epochs
        if "pooled" in args.arms:
            report = federation(work / "pooled", {"site-pooled": pooled}, test, 1, total, args)
            out[ARMS[0]] = float(report["map50"])
        if "fedavg" in args.arms:
            report = federation(work / "fedavg", data, test, args.rounds, args.local_epochs, args)
            out[ARMS[1]] = float(report["map50"])
    for arm in out:
        print(f"seed {seed} {arm}: mAP@0.5 {100 * out[arm]:.1f}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--frames", type=int, default=150, help="training frames per site")
    parser.add_argument("--test", type=int, default=100, help="test frames per camera")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, one process each")
    parser.add_argument(
        "--pooled-epochs", type=int, default=0, help="pooled arm's epochs (default rounds x E)"
    )
    parser.add_argument("--batch-size", default="16")
    parser.add_argument("--lr", default="0.002")
    parser.add_argument("--width", default="32")
    parser.add_argument(
        "--eval-rounds", default="", help="also print FedAvg's test mAP@0.5 after these rounds"
    )
    parser.add_argument("--arms", default="pooled,fedavg", help="pooled, fedavg or both")
    args = parser.parse_args()
    args.eval_rounds = {int(r) for r in args.eval_rounds.split(",") if r}
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="detect-test-") as tmp:
        test = Path(tmp) / "test"
        for n, camera in enumerate(CAMERAS.values()):
            write_scenes(test, args.test, seed=TEST_SEED, camera=camera, start=n * args.test)
        results = map_in_workers(partial(run_seed, args=args, test=test), seeds, args.jobs)
    pooled = args.pooled_epochs or args.rounds * args.local_epochs
    print(f"| arm (detector; pooled {pooled} epochs, FedAvg {args.rounds} x {args.local_epochs}) "
          f"| test mAP@0.5, mean ± sd over {len(seeds)} seeds | per seed |")  # fmt: skip
    print("| --- | --- | --- |")
    for arm in (a for a in ARMS if a in results[0]):
        values = np.array([r[arm] for r in results]) * 100
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {arm} | {values.mean():.1f} ± {sd:.1f} | {each} |")
    if len(results[0]) == len(ARMS):
        gaps = np.array([r[ARMS[0]] - r[ARMS[1]] for r in results]) * 100
        print(f"\npooled minus FedAvg, points: {', '.join(f'{g:.1f}' for g in gaps)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
