"""flsilo train, seconds per epoch, vs a plain hand-written PyTorch loop, same run.

Usage: python benchmarks/bench_train.py [--samples 12000] [--epochs 3] [--repeats 3]

Same model spec, data (MNIST-sized 1x28x28 synthetic images, 10 classes), batch size, SGD
settings and thread count. flsilo's figure is the per-epoch training time `flsilo train
--json` reports (its real code path: verification and model loading excluded, per-epoch
checkpointing included). Baselines, each in its own process:
- plain loop: tensors in memory, randperm, index, forward/backward/step (the tightest loop);
- DataLoader loop: TensorDataset + DataLoader(shuffle=True), what most scripts write.
The three alternate for --repeats rounds; each reports its best (minimum) seconds per epoch,
the usual noise-robust estimate on a shared machine, and the spread across repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PLAIN = r"""
import sys, time, torch, torch.nn.functional as F
from flsilo.models.registry import build_model
kind, path, spec, epochs, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import numpy as np
d = np.load(path)
x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
torch.manual_seed(0)
model = build_model(spec, tuple(x.shape[1:]), 10)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
times = []
for epoch in range(epochs):
    t = time.perf_counter()
    model.train()
    if kind == "plain":
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    else:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    times.append(time.perf_counter() - t)
print(sum(times) / len(times))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="flsilo-train-bench-"))
    flsilo = shutil.which("flsilo") or str(Path(sys.executable).with_name("flsilo"))
    env = {**os.environ, "FLSILO_PASSPHRASE": ""}
    try:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, args.samples)
        x = (
            rng.random((args.samples, 1, 28, 28), dtype=np.float32) * 0.3
            + (y[:, None, None, None] / 10.0)
        ).astype(np.float32)
        data = root / "data.npz"
        # val_fraction 0: flsilo trains on every sample, like the baselines
        np.savez(data, x=x, y=y)

        def run(*cmd: object) -> str:
            return subprocess.run(
                [str(c) for c in cmd], check=True, capture_output=True, text=True, env=env
            ).stdout

        for name in ("hub", "site"):
            run(flsilo, "keys", "new", root / name, "--no-passphrase")
        run(
            flsilo,
            "hub",
            "init",
            root / "hub-ws",
            "--federation",
            "bench",
            "--model",
            args.model,
            "--classes",
            "0,1,2,3,4,5,6,7,8,9",
            "--input-shape",
            "1,28,28",
            "--key",
            root / "hub",
            "--local-epochs",
            args.epochs,
            "--batch-size",
            args.batch_size,
            "--val-fraction",
            "0",
        )
        fp = run(flsilo, "keys", "fingerprint", root / "site.pub").strip()
        run(
            flsilo,
            "hub",
            "enroll",
            root / "hub-ws",
            "site-a",
            root / "site.pub",
            "--fingerprint",
            fp,
        )
        run(flsilo, "hub", "kit", root / "hub-ws", "site-a", "--out", root / "kit")
        times: dict[str, list[float]] = {"flsilo": [], "plain": [], "loader": []}
        for rep in range(args.repeats):
            site = root / f"site-ws-{rep}"
            run(
                flsilo,
                "site",
                "init",
                site,
                "--kit",
                root / "kit",
                "--site-id",
                "site-a",
                "--key",
                root / "site",
                "--data",
                data,
            )
            report = json.loads(
                run(
                    flsilo,
                    "train",
                    site / "packages" / "bench-r0000.safetensors",
                    "--site",
                    site,
                    "--device",
                    "cpu",
                    "--json",
                )
            )
            times["flsilo"].append(report["seconds"] / report["epochs_run"])
            for kind in ("plain", "loader"):
                times[kind].append(
                    float(
                        run(
                            sys.executable,
                            "-c",
                            PLAIN,
                            kind,
                            data,
                            args.model,
                            args.epochs,
                            args.batch_size,
                        )
                    )
                )
        best = {k: min(v) for k, v in times.items()}
        flsilo_epoch, plain, loader = best["flsilo"], best["plain"], best["loader"]
        import torch

        print(
            f"{args.samples} samples 1x28x28, model {args.model}, batch {args.batch_size}, "
            f"{args.epochs} epochs, best of {args.repeats} alternating repeats, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        )

        def spread(kind: str) -> str:
            return ", ".join(f"{t:.2f}" for t in times[kind])

        print("| loop | best seconds / epoch | every repeat | flsilo / loop |")
        print("| --- | ---: | --- | ---: |")
        print(f"| `flsilo train` | {flsilo_epoch:.2f} | {spread('flsilo')} | 1.00 |")
        print(f"| plain loop | {plain:.2f} | {spread('plain')} | {flsilo_epoch / plain:.3f} |")
        print(
            f"| DataLoader loop | {loader:.2f} | {spread('loader')} | {flsilo_epoch / loader:.3f} |"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
