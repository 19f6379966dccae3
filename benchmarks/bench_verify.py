"""flsilo verify on a large artifact, paired with `openssl dgst -sha256` of the same file.

Usage: python benchmarks/bench_verify.py [--size-mib 1024] [--repeats 5] [--out DIR]

Baseline: `openssl dgst -sha256 FILE` (OpenSSL with the SHA extensions: the one-pass floor of
checking any whole-file SHA-256 signature). Every repeat runs openssl, then flsilo verify,
page cache warm, each in its own process, start-up included; the table gives the median of
the paired ratios openssl seconds / flsilo seconds (>= 1.0: flsilo is as fast) and their
range. Also: start-up time of `flsilo verify` on a small file, and `sha256sum` for reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import timed, verify_files

from flsilo.signing.keys import load_public_key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="flsilo-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    pub_path, big, small = verify_files(root, args.size_mib)  # page cache warm
    pub = load_public_key(pub_path)
    flsilo = shutil.which("flsilo") or str(Path(sys.executable).with_name("flsilo"))
    size = big.stat().st_size / 2**20
    verify = [flsilo, "verify", str(big), "--key", str(pub_path)]
    pairs = []
    load = os.getloadavg()
    for _ in range(args.repeats):
        ossl_t, _ = timed(["openssl", "dgst", "-sha256", str(big)], repeat=1)
        ver_t, _ = timed(verify, repeat=1)
        pairs.append((ossl_t, ver_t))
    sha_t, _ = timed(["sha256sum", str(big)], repeat=1)
    small_cmd = [flsilo, "verify", str(small), "--key", str(pub_path)]
    start_t = statistics.median(timed(small_cmd, repeat=1)[0] for _ in range(5))
    py_t, _ = timed([sys.executable, "-c", "pass"], repeat=5)
    ratios = [o / v for o, v in pairs]
    ossl = statistics.median(o for o, _ in pairs)
    ver = statistics.median(v for _, v in pairs)
    print(
        f"file: {size:.0f} MiB (page cache warm); {args.repeats} paired runs; key {pub.fingerprint}"
        f"; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print("| command | median seconds | MiB/s | openssl / this, median (range) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| `openssl dgst -sha256 FILE` | {ossl:.2f} | {size / ossl:.0f} | 1.00 |")
    print(
        f"| `flsilo verify FILE --key K.pub` | {ver:.2f} | {size / ver:.0f} "
        f"| **{statistics.median(ratios):.2f}** ({min(ratios):.2f}–{max(ratios):.2f}) |"
    )
    print(f"| `sha256sum FILE` (one run) | {sha_t:.2f} | {size / sha_t:.0f} | {ossl / sha_t:.2f} |")
    print(
        f"\nsmall-file `flsilo verify` start to finish, median of 5: {start_t:.3f} s "
        f"(bare `python -c pass`: {py_t:.3f} s)"
    )
    # The goal: verify of the big file within openssl's time plus verify's fixed cost.
    over = [v - o - start_t for o, v in pairs]
    print(
        f"flsilo - (openssl + small-file verify), per pair: median {statistics.median(over):+.3f} s "
        f"(range {min(over):+.3f} to {max(over):+.3f}); goal <= 0"
    )
    if args.out is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
