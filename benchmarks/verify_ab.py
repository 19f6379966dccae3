"""`flsilo verify` of one large bundle: this tree against another checkout, with openssl, paired.

Usage: python benchmarks/verify_ab.py BASELINE_TREE [--size-mib 1024] [--rounds 9] [--out DIR]

BASELINE_TREE is another checkout of flsilo (for example ``git worktree add /tmp/base
fd48f30``); both trees run under this interpreter, each from its own source
(``PYTHONPATH``). Every round runs `openssl dgst -sha256 FILE` (the one-pass floor of
checking a whole-file SHA-256 signature), `flsilo verify FILE` from this tree and from the
baseline, in a shuffled order, then 5 verifies of a small bundle from each tree (verify's
fixed cost: start-up, imports, key loading). Page cache warm; from a plain shell, no
priority or scheduler changes. Prints per-round times, the paired ratio this / baseline,
and, per tree, verify - (openssl + median small verify), issue 23's restated goal (<= 0).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import verify_files  # noqa: E402


def timed(cmd: list[str], tree: Path | None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run of ``cmd``, from ``tree``'s sources."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("baseline", type=Path)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="flsilo-ab-"))
    root.mkdir(parents=True, exist_ok=True)
    pub, big, small = verify_files(root, args.size_mib)
    trees = {"this": HERE.parent, "baseline": args.baseline.resolve()}

    def verify(path: Path) -> list[str]:
        return [sys.executable, "-m", "flsilo", "verify", str(path), "--key", str(pub)]

    arms = {"openssl": (["openssl", "dgst", "-sha256", str(big)], None)}
    arms.update({name: (verify(big), tree) for name, tree in trees.items()})
    for cmd, tree in arms.values():
        timed(cmd, tree)  # page cache and bytecode warm
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    small_runs: dict[str, list[float]] = {name: [] for name in trees}
    for r in range(args.rounds):
        order = list(arms)
        random.shuffle(order)
        for name in order:
            runs[name].append(timed(*arms[name]))
        for name, tree in trees.items():
            small_runs[name].append(
                statistics.median(timed(verify(small), tree)[0] for _ in range(5))
            )
        line = ", ".join(f"{n} {runs[n][-1][0]:.2f} s ({runs[n][-1][1]:.2f} CPU)" for n in arms)
        print(f"round {r + 1}: {line}; load {os.getloadavg()[0]:.2f}", flush=True)
    med = statistics.median
    for name, pairs in runs.items():
        print(
            f"{name}: median {med(w for w, _ in pairs):.3f} s, CPU {med(c for _, c in pairs):.3f} s"
        )
    ratio = [b[0] / t[0] for t, b in zip(runs["this"], runs["baseline"], strict=True)]
    print(f"baseline / this, paired: median {med(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f})")
    for name in trees:
        slack = [
            v[0] - (o[0] + s)
            for v, o, s in zip(runs[name], runs["openssl"], small_runs[name], strict=True)
        ]
        print(
            f"{name}: verify - (openssl + small verify) median {med(slack):+.3f} s "
            f"({min(slack):+.3f} to {max(slack):+.3f}); small verify {med(small_runs[name]):.3f} s"
        )


if __name__ == "__main__":
    main()
