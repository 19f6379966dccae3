"""Shared helpers for the benchmarks: synthetic artifacts, timing, peak memory of a child,
and the command line run in process for the results scripts."""

from __future__ import annotations

import contextlib
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from flsilo.cli.app import run
from flsilo.format import manifest as mf
from flsilo.format.artifact import write_artifact
from flsilo.format.tensorfile import RawTensor
from flsilo.signing.keys import generate_key, write_new_key

PLAN = mf.Plan(local_epochs=1, batch_size=32)


def model_tensors(total_bytes: int, seed: int) -> dict[str, RawTensor]:
    """A model of about total_bytes of float32 weights, in a few layers like a real one."""
    rng = np.random.default_rng(seed)
    n = total_bytes // 4
    sizes = [n // 2, n // 4, n // 8, n - n // 2 - n // 4 - n // 8]
    return {
        f"layer{i}.weight": RawTensor.from_numpy(rng.standard_normal(s, dtype=np.float32))
        for i, s in enumerate(sizes)
    }


def bundle_manifest(site: str, base: str, round_: int = 0) -> mf.Manifest:
    return mf.Manifest(
        kind="bundle",
        format_version=mf.FORMAT_VERSION,
        federation="bench",
        round=round_,
        created_at=mf.now_utc(),
        software=mf.software_versions(),
        model=mf.ModelInfo("logreg", "0" * 64, ("a", "b"), (1,)),
        bundle=mf.BundleInfo(
            site=site,
            base_package_sha256=base,
            num_samples=100 + len(site),
            plan=PLAN,
            metrics_global=None,
            metrics_trained=None,
        ),
    )


def write_bundle(path: Path, total_bytes: int, seed: int, key=None) -> Path:
    key = key or generate_key()
    write_artifact(
        path,
        model_tensors(total_bytes, seed),
        bundle_manifest("site-a", "1" * 64),
        key,
        overwrite=True,
    )
    return path


def verify_files(root: Path, size_mib: int) -> tuple[Path, Path, Path]:
    """A fresh key (``root/k``, no passphrase), a signed bundle of ``size_mib`` MiB and a
    64 KiB one, each read once so the page cache holds them: (public key, big, small)."""
    key = generate_key()
    write_new_key(root / "k", key, None, "bench")
    big = write_bundle(root / "big.safetensors", size_mib << 20, 1, key)
    small = write_bundle(root / "small.safetensors", 64 << 10, 2, key)
    for f in (big, small):
        f.read_bytes()
    return root / "k.pub", big, small


def timed(cmd: list[str], repeat: int = 3) -> tuple[float, int]:
    """Best wall time of `repeat` runs, and the peak RSS (KiB) of the child over those runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def child_peak_rss(cmd: list[str]) -> tuple[float, float]:
    """Run cmd in a fresh child wrapper that reports its own peak RSS in MiB; return (seconds, MiB)."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True
    )
    seconds, mib = json.loads(out.stdout)
    return seconds, mib


def enroll_sites(
    hub: Path, keys: Path, work: Path, data: dict[str, Path], *site_init: object
) -> None:
    """Enroll each site (its key ``keys/SITE``), make its kit and init its workspace
    ``work/SITE`` on ``data[SITE]`` (``site_init``: more ``site init`` options)."""
    from flsilo.signing.keys import load_public_key

    hub_fp = load_public_key(keys / "hub.pub").fingerprint
    for site, path in data.items():
        pub = keys / f"{site}.pub"
        cli("hub", "enroll", hub, site, pub, "--fingerprint", load_public_key(pub).fingerprint)
        cli("hub", "kit", hub, site, "--out", work / f"kit-{site}")
        cli(
            "site", "init", work / site, "--kit", work / f"kit-{site}", "--site-id", site,
            "--key", keys / site, "--hub-fingerprint", hub_fp, "--data", path, *site_init,
        )  # fmt: skip


def cli(*args: object, threads: int | None = None) -> str:
    """``flsilo ARGS`` in this process: its stdout, or RuntimeError with its stderr."""
    argv = [str(a) for a in args]
    if threads is not None:
        argv = ["--threads", str(threads), *argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(argv)
    if code != 0:
        raise RuntimeError(f"flsilo {' '.join(argv)} exited {code}: {err.getvalue()}")
    return out.getvalue()
