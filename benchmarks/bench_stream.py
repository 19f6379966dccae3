"""Streaming input: training memory against data size, throughput, and decode rate.

Usage: python benchmarks/bench_stream.py [--records 4000,16000] [--pairs 3] [--workers N]

Generates 3x96x96 PNG files in ten class folders (1,000 different smooth colour fields
plus noise, about 25 KB each, repeated to the record count), a hub and a site, then
measures, each in its own process:

1. memory: peak of the summed PSS (/proc/PID/smaps_rollup) of `flsilo train` and its
   DataLoader workers, sampled every 50 ms, for each record count, from a fresh workspace
   (so indexing, hashing and the check decode of every file are included);
2. throughput: `flsilo train`'s images/s against a plain PyTorch loop with the same
   DataLoader settings, Pillow decoding, preprocessing and model, in alternating pairs;
   the figure is the median of the per-pair ratios;
3. decode: images/s of flsilo's decode and preprocessing of one sample (one process)
   against Pillow's own decode (`Image.open(f).load()`) of the same files.

The machine may be shared: pairs alternate which side runs first, and ratios are per pair.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = [f"c{i}" for i in range(10)]
MODEL = "cnn:channels=4x8,hidden=32"
BATCH = 64

PLAIN = r"""
import sys, time, numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from PIL import Image
from flsilo.models.registry import build_model
root, spec, batch, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
files = [(f, c) for c, d in enumerate(sorted(p for p in root.iterdir() if p.is_dir()))
         for f in sorted(d.iterdir())]
class Images(torch.utils.data.Dataset):
    def __len__(self): return len(files)
    def __getitem__(self, i):
        f, c = files[i]
        with Image.open(f) as im:
            x = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), c
torch.manual_seed(0)
model = build_model(spec, (3, 96, 96), 10)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loader = torch.utils.data.DataLoader(Images(), batch_size=batch, shuffle=True,
    num_workers=workers, prefetch_factor=2 if workers else None)
model.train()
t, n = time.perf_counter(), 0
for xb, yb in loader:
    loss = F.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    n += len(yb)
print(n / (time.perf_counter() - t))
"""

DECODE = r"""
import sys, time
from pathlib import Path
from PIL import Image
from flsilo.plans.federation import DataSpec
from site_kit.data.samples import open_samples
root, limit = Path(sys.argv[1]), int(sys.argv[2])
classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
samples = open_samples(root, "imagefolder", classes, (3, 96, 96), DataSpec())
files = [samples.ctx.root / samples.index.source(k) for k in range(limit)]
def pillow():
    for f in files:
        with Image.open(f) as im:
            im.load()
def flsilo():
    for k in range(limit):
        samples.sample(k)
rates = {}
for name, fn in (("pillow", pillow), ("flsilo", flsilo), ("pillow", pillow), ("flsilo", flsilo)):
    t = time.perf_counter(); fn(); rate = limit / (time.perf_counter() - t)
    rates[name] = max(rates.get(name, 0.0), rate)
print(rates["pillow"], rates["flsilo"])
"""


def make_images(root: Path, n: int, distinct: int = 1000) -> None:
    """``n`` PNG files in ten class folders; ``distinct`` different images, then copies."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(min(distinct, n)):
        field = rng.random((4, 4, 3)) * 160 + 40
        big = np.asarray(
            Image.fromarray(field.astype(np.uint8)).resize((96, 96), Image.Resampling.BILINEAR)
        )
        noisy = np.clip(big.astype(np.int16) + rng.integers(-12, 13, big.shape), 0, 255)
        out = io.BytesIO()
        Image.fromarray(noisy.astype(np.uint8)).save(out, format="PNG")
        blobs.append(out.getvalue())
    per = n // len(CLASSES)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per):
            (root / name / f"{i:05d}.png").write_bytes(blobs[(c * per + i) % len(blobs)])


def link_subset(src: Path, dst: Path, n: int) -> None:
    per = n // len(CLASSES)
    for name in CLASSES:
        (dst / name).mkdir(parents=True)
        for f in sorted((src / name).iterdir())[:per]:
            os.link(f, dst / name / f.name)


def tree_pss_kib(pid: int) -> int:
    """Summed PSS of ``pid`` and every descendant (KiB); 0 for processes already gone."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def measured(cmd: list[str], env: dict[str, str]) -> tuple[str, int]:
    """Run ``cmd``; its stdout and the peak summed PSS of its process tree (KiB)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss_kib(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return out, peak


class Bench:
    def __init__(self, root: Path, workers: int | None) -> None:
        self.root = root
        self.flsilo = shutil.which("flsilo") or str(Path(sys.executable).with_name("flsilo"))
        self.env = {**os.environ, "FLSILO_PASSPHRASE": ""}
        self.workers = [] if workers is None else ["--workers", str(workers)]
        self.sites = 0
        self.hub_fp = ""

    def run(self, *cmd: object) -> str:
        done = subprocess.run(
            [str(c) for c in cmd], check=False, capture_output=True, text=True, env=self.env
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def federation(self) -> None:
        f, r = self.flsilo, self.root
        for name in ("hub", "site"):
            self.run(f, "keys", "new", r / name, "--no-passphrase")
        self.run(f, "hub", "init", r / "hub-ws", "--federation", "bench", "--model", MODEL,
                 "--classes", ",".join(CLASSES), "--input-shape", "3,96,96", "--key", r / "hub",
                 "--local-epochs", "1", "--batch-size", BATCH, "--val-fraction", "0")  # fmt: skip
        fp = self.run(f, "keys", "fingerprint", r / "site.pub").strip()
        self.run(f, "hub", "enroll", r / "hub-ws", "site-a", r / "site.pub", "--fingerprint", fp)
        self.run(f, "hub", "kit", r / "hub-ws", "site-a", "--out", r / "kit")
        self.hub_fp = self.run(f, "keys", "fingerprint", r / "hub.pub").strip()

    def site(self, data: Path, index_from: Path | None = None) -> Path:
        self.sites += 1
        site = self.root / f"site-{self.sites}"
        self.run(self.flsilo, "site", "init", site, "--kit", self.root / "kit", "--site-id",
                 "site-a", "--key", self.root / "site", "--data", data,
                 "--hub-fingerprint", self.hub_fp)  # fmt: skip
        if index_from is not None:  # the same data: skip indexing it again
            shutil.copytree(index_from / "index", site / "index")
        return site

    def train(self, site: Path) -> tuple[dict, int]:
        cmd = [self.flsilo, "train", str(site / "packages" / "bench-r0000.safetensors"),
               "--site", str(site), "--device", "cpu", "--json", *self.workers]  # fmt: skip
        out, peak = measured(cmd, self.env)
        return json.loads(out), peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", default="4000,16000")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--pair-records", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=None, help="default: flsilo's default")
    parser.add_argument("--decode-files", type=int, default=2000)
    args = parser.parse_args()
    counts = [int(c) for c in args.records.split(",")]
    root = Path(tempfile.mkdtemp(prefix="flsilo-stream-bench-"))
    from site_kit.data.stream import default_workers

    workers = default_workers() if args.workers is None else args.workers
    bench = Bench(root, args.workers)
    try:
        t0 = time.perf_counter()
        make_images(root / f"data-{max(counts)}", max(counts))
        for n in counts:
            if n != max(counts):
                link_subset(root / f"data-{max(counts)}", root / f"data-{n}", n)
        print(f"generated {max(counts)} images in {time.perf_counter() - t0:.0f} s", flush=True)
        bench.federation()

        print(f"\n1. memory ({workers} workers), peak PSS of flsilo train and its workers")
        print("| records | peak MiB | train images/s | wall s |")
        print("| ---: | ---: | ---: | ---: |")
        peaks, first_site = {}, {}
        for n in counts:
            site = bench.site(root / f"data-{n}")
            t = time.perf_counter()
            report, peak = bench.train(site)
            peaks[n], first_site[n] = peak, site
            print(f"| {n} | {peak / 1024:.0f} | {report['samples_per_second']:.0f} | "
                  f"{time.perf_counter() - t:.0f} |", flush=True)  # fmt: skip
        if len(counts) > 1:
            lo, hi = min(counts), max(counts)
            per = (peaks[hi] - peaks[lo]) / (hi - lo)
            print(f"growth {lo} -> {hi}: {per:.2f} KiB per record")

        n = args.pair_records
        if n not in counts:
            link_subset(root / f"data-{max(counts)}", root / f"data-{n}", n)
            first_site[n] = bench.site(root / f"data-{n}")
            bench.train(first_site[n])  # indexes the data once; the pairs copy its index
        print(f"\n2. throughput, {n} records, {workers} workers, alternating pairs")
        print("| pair | flsilo images/s | plain loop images/s | ratio |")
        print("| ---: | ---: | ---: | ---: |")
        ratios = []
        for pair in range(args.pairs):
            site = bench.site(root / f"data-{n}", index_from=first_site[n])
            plain_cmd = [sys.executable, "-c", PLAIN, str(root / f"data-{n}"), MODEL,
                         str(BATCH), str(workers)]  # fmt: skip
            if pair % 2 == 0:
                report, _ = bench.train(site)
                plain = float(measured(plain_cmd, bench.env)[0])
            else:
                plain = float(measured(plain_cmd, bench.env)[0])
                report, _ = bench.train(site)
            ratio = report["samples_per_second"] / plain
            ratios.append(ratio)
            print(f"| {pair + 1} | {report['samples_per_second']:.0f} | {plain:.0f} | "
                  f"{ratio:.3f} |", flush=True)  # fmt: skip
        print(f"median ratio {statistics.median(ratios):.3f}")

        print(f"\n3. decode, {args.decode_files} files, one process (best of two)")
        out = bench.run(sys.executable, "-c", DECODE, root / f"data-{n}", args.decode_files)
        pillow, ours = (float(v) for v in out.split())
        print(f"Pillow decode {pillow:.0f} images/s; flsilo decode + preprocess {ours:.0f} "
              f"images/s; ratio {ours / pillow:.3f}")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
