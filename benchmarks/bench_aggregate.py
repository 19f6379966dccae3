"""flsilo aggregate on K bundles of S MiB, paired with the disk floor, openssl and Flower.

Usage: python benchmarks/bench_aggregate.py [--sizes-mib 64,256] [--sites 2,8,32,64]
                                            [--repeats 3] [--flower PYTHON] [--json FILE]

For each (S, K): a real hub workspace (an mlp sized to S), K enrolled sites, K signed
bundles in an inbox folder. Every repeat runs each contender once, in its own process,
with the inputs read into the page cache first, in this order:
- floor:   `cp inbox/* DEST/ && sync DEST/*` - the least a durable archive of the inputs costs
- openssl: `openssl dgst -sha256 inbox/*.safetensors` - hashing every input once, one core
- flsilo:  `flsilo aggregate HUB --inbox INBOX` on a fresh copy of the hub - verify every
           bundle, archive it durably, average, write and sign the package, commit the log
- flower:  Flower's own FedAvg (`aggregate_arrayrecords`, every bundle loaded into an
           ArrayRecord, nothing verified), run by the Python of a separate virtual
           environment (see benchmarks/README.md); skipped past --flower-max-gib of input
Each flsilo run is paired with the floor and Flower runs of the same repeat; the table gives
the median of the paired ratios and their range over the repeats, plus peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import child_peak_rss

from flsilo.format import manifest as mf
from flsilo.format.artifact import scan_file, write_artifact
from flsilo.format.tensorfile import NUMPY_DTYPE, RawTensor
from flsilo.plans.federation import FederationConfig
from flsilo.plans.plan import Plan, parse_schedule
from flsilo.signing.keys import generate_key, write_new_key
from hub_kit.enrolment import enroll
from hub_kit.setup import hub_init
from hub_kit.workspace import HubWorkspace

FLOWER = Path(__file__).resolve().parent / "flower_fedavg.py"


def build(root: Path, size_mib: int, sites: int) -> tuple[Path, Path]:
    """A hub workspace and an inbox folder with K signed bundles; returns both."""
    hidden = max(1, (size_mib << 20) // 4 // 74)  # mlp 64 -> hidden -> 10 on 1x8x8 input
    keys = root / "keys"
    write_new_key(keys / "hub", generate_key(), None, "hub")
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
    inbox = root / "inbox"
    assert scan.manifest.package is not None
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
            format_version=mf.FORMAT_VERSION,
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
        write_artifact(inbox / mf.artifact_name("bench", 0, site), tensors, m, key)
    return hub, inbox


def warm(paths: list[Path]) -> None:
    for p in paths:
        with p.open("rb") as fh:
            while fh.read(16 << 20):
                pass


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def run_case(args: argparse.Namespace, size: int, k: int, flsilo: str) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="flsilo-agg-", dir=args.tmp))
    try:
        hub, inbox = build(root, size, k)
        inputs = sorted(inbox.glob("*.safetensors"))
        total = sum(p.stat().st_size for p in inputs) / 2**20
        runs: dict[str, list[tuple[float, float]]] = {
            "floor": [],
            "openssl": [],
            "flsilo": [],
            "flower": [],
        }
        use_flower = args.flower and total / 1024 <= args.flower_max_gib
        for _ in range(args.repeats):
            dest = root / "floor"
            dest.mkdir()
            warm(inputs)
            runs["floor"].append(
                child_peak_rss(["sh", "-c", f'cp -- "{inbox}"/* "{dest}"/ && sync "{dest}"/*'])
            )
            shutil.rmtree(dest)
            warm(inputs)
            runs["openssl"].append(
                child_peak_rss(["openssl", "dgst", "-sha256", *map(str, inputs)])
            )
            trial = root / "trial"
            shutil.copytree(hub, trial)
            warm(inputs)
            runs["flsilo"].append(
                child_peak_rss([flsilo, "aggregate", str(trial), "--inbox", str(inbox)])
            )
            shutil.rmtree(trial)
            if use_flower:
                warm(inputs)
                runs["flower"].append(child_peak_rss([args.flower, str(FLOWER), *map(str, inputs)]))
        return {"S": size, "K": k, "input_mib": total, "runs": runs}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def row(case: dict[str, object]) -> str:
    runs: dict[str, list[tuple[float, float]]] = case["runs"]  # type: ignore[assignment]
    total = float(case["input_mib"])  # type: ignore[arg-type]
    fl = [t for t, _ in runs["flsilo"]]
    floor = [t for t, _ in runs["floor"]]
    ossl = [t for t, _ in runs["openssl"]]
    flower = [t for t, _ in runs["flower"]]
    cells = [
        str(case["S"]),
        str(case["K"]),
        str(len(fl)),
        f"{statistics.median(fl):.2f}",
        f"{total / statistics.median(fl):.0f}",
        f"{statistics.median(floor):.2f}",
        spread([a / b for a, b in zip(fl, floor, strict=True)]),
        f"{statistics.median(ossl):.2f}",
        spread([a / b for a, b in zip(fl, ossl, strict=True)]),
        f"{statistics.median(flower):.2f}" if flower else "not run",
        spread([a / b for a, b in zip(fl, flower, strict=True)]) if flower else "—",
        f"{max(m for _, m in runs['flsilo']):.0f}",
        f"{max(m for _, m in runs['flower']):.0f}" if flower else "—",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| S MiB | K | runs | flsilo s | flsilo MiB/s | floor s | flsilo / floor | openssl s "
    "| flsilo / openssl | Flower s | flsilo / Flower | flsilo peak RSS MiB | Flower peak RSS MiB |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mib", default="64,256")
    parser.add_argument("--sites", default="2,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flower", default=None, help="Python of the Flower venv")
    parser.add_argument("--flower-max-gib", type=float, default=4.0)
    parser.add_argument("--tmp", default=None, help="where to build (needs ~3x the inputs)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    flsilo = shutil.which("flsilo") or str(Path(sys.executable).with_name("flsilo"))
    cases = []
    print(HEADER, flush=True)
    for size in (int(s) for s in args.sizes_mib.split(",")):
        for k in (int(s) for s in args.sites.split(",")):
            case = run_case(args, size, k, flsilo)
            cases.append(case)
            print(row(case), flush=True)
            if args.json:
                args.json.write_text(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
