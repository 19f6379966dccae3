"""Does the drift flag fire on a site that preprocesses differently, and only then?

Three sites hold scikit-learn's handwritten digits as PNG files (upscaled to 32 x 32, one
folder per class). Each scenario is run over several seeds (the seed draws the split of the
images across sites); every site's input summary is taken exactly as a site does at
training (``site_kit.inputsummary``, through the streaming index and the plan's
preprocessing) and the hub's flags exactly as ``aggregate`` computes them
(``hub_kit.drift``, default threshold). Scenarios:

- ``same``: an even random split, every site preprocessing alike;
- ``label-skew``: site-a holds digits 0-3, site-b 4-6, site-c 7-9 (class mixes move the
  channel means: this must not fire);
- ``inverted``: as ``same``, but site-c stores its images inverted (white digits on black
  become black on white, as a MONOCHROME1 file read without its inversion);
- ``cropped``: as ``same``, but site-c's files are a looser crop (the digit in the middle
  of a 64 x 64 image with a wide black border, as a different cropping step would leave);
- ``skew+inverted``: label skew, and site-c inverted as well.

Run: ``python benchmarks/results_drift.py --seeds 5`` (about a minute on 2 cores). It prints
a table of how often each site was flagged, and the distances.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from flsilo.plans.federation import DataSpec
from hub_kit.drift import DEFAULT_THRESHOLD, drift_flags
from site_kit.data.samples import open_samples
from site_kit.inputsummary import summary_of

SITES = ("site-a", "site-b", "site-c")
CLASSES = tuple(str(d) for d in range(10))
SCENARIOS = ("same", "label-skew", "inverted", "cropped", "skew+inverted")


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0 * 255).astype(np.uint8), d.target


def _write(folder: Path, images: np.ndarray, labels: np.ndarray, how: str) -> None:
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        pic = Image.fromarray(img).resize((32, 32), Image.Resampling.BILINEAR)
        if how == "inverted":
            pic = Image.fromarray(255 - np.asarray(pic))
        elif how == "cropped":
            canvas = Image.new("L", (64, 64))
            canvas.paste(pic, (16, 16))
            pic = canvas
        target = folder / str(label)
        target.mkdir(parents=True, exist_ok=True)
        pic.save(target / f"{i:05d}.png")


def _split(labels: np.ndarray, scenario: str, rng: np.random.Generator) -> list[np.ndarray]:
    if scenario.startswith("label-skew") or scenario.startswith("skew"):
        groups = ({0, 1, 2, 3}, {4, 5, 6}, {7, 8, 9})
        return [np.flatnonzero(np.isin(labels, list(g))) for g in groups]
    order = rng.permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, 3)]


def run(scenario: str, seed: int, images: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    parts = _split(labels, scenario, rng)
    odd = {"inverted": "inverted", "cropped": "cropped", "skew+inverted": "inverted"}
    with tempfile.TemporaryDirectory(prefix="flsilo-drift-") as tmp:
        summaries = {}
        for site, part in zip(SITES, parts, strict=True):
            # each seed also subsamples its sites (80%), so seeds differ in skewed splits too
            keep = np.sort(rng.choice(part, size=int(0.8 * len(part)), replace=False))
            how = odd.get(scenario, "") if site == "site-c" else ""
            folder = Path(tmp) / site
            _write(folder, images[keep], labels[keep], how)
            samples = open_samples(folder, "imagefolder", CLASSES, (1, 32, 32), DataSpec())
            summaries[site] = summary_of(samples, 0, 0)
        flags = drift_flags(summaries)
    return {site: (flag.flagged, flag.distance, flag.hint) for site, flag in flags.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    images, labels = _digits()
    print(f"threshold {DEFAULT_THRESHOLD}; {args.seeds} seeds; site-c is the odd one where any")
    print(f"{'scenario':<14} {'flagged a/b/c (of seeds)':<26} distances a / b / c (min-max)")
    for scenario in SCENARIOS:
        flagged = {s: 0 for s in SITES}
        dist: dict[str, list[float]] = {s: [] for s in SITES}
        hint = ""
        for seed in range(args.seeds):
            result = run(scenario, seed, images, labels)
            for site, (is_flagged, distance, text) in result.items():  # type: ignore[misc]
                flagged[site] += int(is_flagged)
                dist[site].append(float(distance))
                if is_flagged and site == "site-c":
                    hint = str(text)
        counts = "/".join(str(flagged[s]) for s in SITES)
        spans = " / ".join(f"{min(dist[s]):.2f}-{max(dist[s]):.2f}" for s in SITES)
        print(f"{scenario:<14} {counts:<26} {spans}")
        if hint:
            print(f"{'':<14} e.g. {hint.split(':')[0]}")


if __name__ == "__main__":
    main()
