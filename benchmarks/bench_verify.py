"""flsilo verify on a large artifact vs `sha256sum` of the same file, in the same run.

Usage: python benchmarks/bench_verify.py [--size-mib 1024] [--out DIR]
Baseline: coreutils `sha256sum FILE` (hashing is the floor of any verification).
Also: start-up time of `flsilo verify` on a small file (the verify path never imports torch).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import timed, write_bundle

from flsilo.keys import generate_key, write_new_key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="flsilo-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    pub = write_new_key(root / "k", key, None, "bench")
    big = write_bundle(root / "big.safetensors", args.size_mib << 20, 1, key)
    small = write_bundle(root / "small.safetensors", 64 << 10, 2, key)
    flsilo = shutil.which("flsilo") or str(Path(sys.executable).with_name("flsilo"))
    size = big.stat().st_size / 2**20
    for f in (big, small):  # warm the page cache, so both read from memory
        f.read_bytes()
    sha_t, _ = timed(["sha256sum", str(big)])
    ver_t, _ = timed([flsilo, "verify", str(big), "--key", str(root / "k.pub")])
    start_t, _ = timed([flsilo, "verify", str(small), "--key", str(root / "k.pub")], repeat=5)
    py_t, _ = timed([sys.executable, "-c", "pass"], repeat=5)
    print(f"file: {size:.0f} MiB (page cache warm); key {pub.fingerprint}")
    print("| command | seconds | MiB/s | vs sha256sum |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| `sha256sum FILE` | {sha_t:.2f} | {size / sha_t:.0f} | 1.00x |")
    print(
        f"| `flsilo verify FILE --key K.pub` | {ver_t:.2f} | {size / ver_t:.0f} | {sha_t / ver_t:.2f}x |"
    )
    print(
        f"\nsmall-file `flsilo verify` start to finish: {start_t:.3f} s (bare `python -c pass`: {py_t:.3f} s)"
    )
    if args.out is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
