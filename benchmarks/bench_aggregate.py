"""flsilo aggregate on K bundles of S bytes vs sha256sum and an in-memory reference, same run.

Usage: python benchmarks/bench_aggregate.py [--sizes-mib 64,256] [--sites 2,8,32]

For each (S, K): a real hub workspace (mlp model sized to S), K enrolled sites, K signed
bundles in the inbox. Measured in separate child processes, page cache warm:
- `sha256sum inbox/*.safetensors`  (baseline: the cost of merely hashing the inputs once)
- `flsilo aggregate HUB`           (verify every bundle, archive, average, sign)
- in-memory reference              (safetensors load_file of every bundle, then a
                                    sample-weighted average like Flower's aggregate())
Reports throughput (input MiB / s) and peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import child_peak_rss

from flsilo import manifest as mf
from flsilo.artifact import scan_file, write_artifact
from flsilo.federation import FederationConfig
from flsilo.keys import generate_key, write_new_key
from flsilo.plan import Plan, parse_schedule
from flsilo.tensorfile import NUMPY_DTYPE, RawTensor
from hub_kit.enrolment import enroll
from hub_kit.setup import hub_init
from hub_kit.workspace import HubWorkspace

REFERENCE = """
import sys, numpy as np
from functools import reduce
from safetensors.numpy import load_file
paths = sys.argv[1:]
models = [load_file(p) for p in paths]                      # every bundle in memory at once
weights = [100 + i for i in range(len(models))]
total = sum(weights)
names = sorted(models[0])
weighted = [[m[n] * w for n in names] for m, w in zip(models, weights)]
avg = [reduce(np.add, layer) / total for layer in zip(*weighted)]
"""


def build(root: Path, size_mib: int, sites: int) -> Path:
    hidden = max(1, (size_mib << 20) // 4 // 74)  # mlp 64 -> hidden -> 10 on 1x8x8 input
    keys = root / "keys"
    hub_key = generate_key()
    write_new_key(keys / "hub", hub_key, None, "hub")
    config = FederationConfig(
        federation="bench",
        model=f"mlp:hidden={hidden}",
        classes=tuple("0123456789"),
        input_shape=(1, 8, 8),
        schedule=parse_schedule("periodic:100", (1,)),
        plan=Plan(local_epochs=1, batch_size=32),
    )
    hub = root / "hub"
    package = hub_init(hub, config, keys / "hub", lambda _p: b"")
    ws = HubWorkspace.open(hub)
    scan = scan_file(package)
    data = package.read_bytes()
    base = {
        t.name: np.frombuffer(
            data, NUMPY_DTYPE[t.dtype], t.numel, scan.header.data_start + t.begin
        ).reshape(t.shape)
        for t in scan.header.tensors
    }
    for i in range(sites):
        site = f"site-{i:02d}"
        key = generate_key()
        pub = write_new_key(keys / site, key, None, site)
        enroll(ws, site, keys / f"{site}.pub", pub.fingerprint, passphrase=lambda _p: b"")
        tensors = {
            n: RawTensor.from_numpy(a + np.float32(0.001 * (i + 1))) for n, a in base.items()
        }
        m = mf.Manifest(
            kind="bundle",
            format_version=1,
            federation="bench",
            round=0,
            created_at=mf.now_utc(),
            software=mf.software_versions(),
            model=scan.manifest.model,
            bundle=mf.BundleInfo(
                site=site,
                base_package_sha256=scan.sha256,
                num_samples=100 + i,
                plan=scan.manifest.package.plan,
                metrics_global=None,
                metrics_trained=None,
            ),
        )
        write_artifact(hub / "inbox" / mf.artifact_name("bench", 0, site), tensors, m, key)
    return hub


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mib", default="64,256")
    parser.add_argument("--sites", default="2,8,32")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    flsilo = shutil.which("flsilo") or str(Path(sys.executable).with_name("flsilo"))
    rows = []
    print(
        "| S (MiB) | K | sha256sum MiB/s | flsilo aggregate MiB/s | ratio | reference MiB/s | flsilo peak RSS MiB | reference peak RSS MiB | RSS budget 2.5S+300 |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in (int(s) for s in args.sizes_mib.split(",")):
        for k in (int(s) for s in args.sites.split(",")):
            root = Path(tempfile.mkdtemp(prefix="flsilo-agg-"))
            try:
                hub = build(root, size, k)
                inputs = sorted((hub / "inbox").glob("*.safetensors"))
                total = sum(p.stat().st_size for p in inputs) / 2**20
                for p in inputs:
                    p.read_bytes()  # warm the page cache for every contender alike
                sha_t, _ = child_peak_rss(["sha256sum", *map(str, inputs)])
                # The reference holds every bundle plus a weighted copy: skip it past 4 GiB of input.
                ref_t, ref_rss = (
                    child_peak_rss([sys.executable, "-c", REFERENCE, *map(str, inputs)])
                    if size * k <= 4096
                    else (float("nan"), float("nan"))
                )
                agg_t, agg_rss = child_peak_rss([flsilo, "aggregate", str(hub)])
                row = {
                    "S": size,
                    "K": k,
                    "input_mib": total,
                    "sha256sum_s": sha_t,
                    "aggregate_s": agg_t,
                    "reference_s": ref_t,
                    "aggregate_rss": agg_rss,
                    "reference_rss": ref_rss,
                }
                rows.append(row)
                print(
                    f"| {size} | {k} | {total / sha_t:.0f} | {total / agg_t:.0f} | {sha_t / agg_t:.2f}x | "
                    f"{total / ref_t:.0f} | {agg_rss:.0f} | {ref_rss:.0f} | {2.5 * size + 300:.0f} |",
                    flush=True,
                )
            finally:
                shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
