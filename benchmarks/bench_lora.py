"""Bundle bytes with LoRA adapters against the whole model, through the real commands.

Two federations of one site each on the same model (default torchvision:resnet50, ten
classes, 3x32x32 inputs): one trains the whole model, one ``--adapters lora:r=R``. Each
site trains one epoch on a few synthetic images and writes its signed bundle; the script
prints both bundles' bytes, the model's bytes (its tensors in the package, adapters left
out) and the ratio as one JSON object. Run it in the vision environment:

    PYTHONPATH=. ~/.cache/flsilo-vision-*/bin/python benchmarks/bench_lora.py --rank 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from flsilo.format.artifact import scan_file

CLASSES = ",".join(str(d) for d in range(10))


def flsilo(*args: object) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flsilo", *map(str, args)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"flsilo {' '.join(map(str, args))}: {done.stderr}")
    return done.stdout.strip()


def federation(root: Path, model: str, shape: str, extra: list[str]) -> Path:
    """Hub, one enrolled site, one trained round; returns the bundle's path."""
    keys = root / "keys"
    keys.mkdir(parents=True)
    for name in ("hub", "site"):
        flsilo("keys", "new", keys / name, "--no-passphrase")
    hub = root / "hub"
    flsilo("hub", "init", hub, "--federation", "bench", "--model", model, "--classes", CLASSES,
           "--input-shape", shape, "--key", keys / "hub", "--schedule", "periodic:1",
           "--batch-size", "8", "--min-sites", "1", *extra)  # fmt: skip
    fingerprint = flsilo("keys", "fingerprint", keys / "site.pub")
    flsilo("hub", "enroll", hub, "site", keys / "site.pub", "--fingerprint", fingerprint)
    flsilo("hub", "kit", hub, "site", "--out", root / "kit")
    dims = tuple(int(d) for d in shape.split(","))
    rng = np.random.default_rng(0)
    data = root / "data.npz"
    np.savez(data, x=rng.standard_normal((40, *dims)).astype(np.float32), y=np.arange(40) % 10)
    hub_print = flsilo("keys", "fingerprint", keys / "hub.pub")
    site = root / "site"
    flsilo("site", "init", site, "--kit", root / "kit", "--site-id", "site", "--key",
           keys / "site", "--hub-fingerprint", hub_print, "--data", data)  # fmt: skip
    return Path(flsilo("train", site / "packages" / "bench-r0000.safetensors", "--site", site,
                       "--device", "cpu").splitlines()[-1])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="torchvision:resnet50")
    parser.add_argument("--shape", default="3,32,32")
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        whole = federation(Path(tmp) / "whole", args.model, args.shape, [])
        lora = federation(
            Path(tmp) / "lora", args.model, args.shape, ["--adapters", f"lora:r={args.rank}"]
        )
        package = lora.parents[1] / "packages" / "bench-r0000.safetensors"
        tensors = scan_file(package).header.tensors
        model_bytes = sum(t.nbytes for t in tensors if ".lora_" not in t.name)
        adapters = [t for t in tensors if t.name.endswith(".lora_B.weight")]
        report = {
            "model": args.model,
            "rank": args.rank,
            "adapted_layers": len(adapters),
            "model_bytes": model_bytes,
            "whole_bundle_bytes": whole.stat().st_size,
            "lora_bundle_bytes": lora.stat().st_size,
            "lora_bundle_share_of_model": round(lora.stat().st_size / model_bytes, 5),
            "lora_package_extra_bytes": package.stat().st_size
            - (whole.parents[1] / "packages" / "bench-r0000.safetensors").stat().st_size,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
