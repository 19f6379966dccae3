"""``site check-data``: read a site's data as training would, and report every problem at once.

Torch-free, and read-only for the data: the same adapters and the federation's classes,
input shape and data settings that ``flsilo train`` uses, so data that passes here loads
there. It refreshes the site's index of the data (``site_kit.data.index``) as training
would, so every new or changed file is decoded once here and not hashed again by train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np

from flsilo.plans.plan import Plan, task_spec
from flsilo.plans.preprocessing import preprocess_lines
from flsilo.runtime.errors import DataError, UsageError
from site_kit.data.samples import Samples, open_samples
from site_kit.preview import cells, pick, render_grid, write_png
from site_kit.workspace import SiteWorkspace

SHOWN = 10
"""How many problems are listed one by one; the rest are counted."""


@dataclass
class DataCheck:
    data: str
    usable: int
    classes: list[str]
    class_counts: list[int]
    problems: list[str] = field(default_factory=list)
    samples: list[dict[str, str]] = field(default_factory=list)
    """Where each usable sample comes from (file, frame, label), for data whose samples are
    parts of files: a video's frames at their times, a multi-frame DICOM file's frames."""

    @property
    def clips(self) -> list[str]:
        """One line per file (and label) with sampled frames: how many, first and last."""
        lines = []
        for (source, label), run in groupby(self.samples, key=lambda s: (s["source"], s["label"])):
            frames = [s["frame"] for s in run]
            span = frames[0] if len(frames) == 1 else f"{frames[0]} .. {frames[-1]}"
            lines.append(f"{source} ({label}): {len(frames)} frames, {span}")
        return lines

    preprocess: list[str] = field(default_factory=list)
    """The plan's preprocessing, in words (``[plan.preprocess]``, ``[plan.augment]``)."""
    preview: str | None = None
    """The PNG ``--preview`` wrote, if asked for."""

    @property
    def ok(self) -> bool:
        return not self.problems and self.usable > 0  # a class may be absent: sites differ

    @property
    def missing_classes(self) -> list[str]:
        return [c for c, n in zip(self.classes, self.class_counts, strict=True) if n == 0]


def check_data(
    root: Path, data: Path | None, data_format: str | None, preview: Path | None = None
) -> DataCheck:
    ws = SiteWorkspace.open(root)
    source = data or ws.recorded_data()
    if source is None:
        raise UsageError(
            "no data to check", hint="pass --data PATH (or set it at 'flsilo site init')"
        )
    fmt = data_format or (ws.config.data_format if data is None else None)
    fed = ws.federation
    plan = fed.plan
    if preview is not None and len(fed.input_shape) != 3:
        raise UsageError(
            "--preview shows images; this federation's input is a table",
            path=preview,
            hint="leave out --preview",
        )
    samples = open_samples(
        source,
        fmt,
        fed.classes,
        fed.input_shape,
        fed.data,
        skip_bad=True,
        preprocess=plan.preprocess,
        store=ws.root,
        task=task_spec(plan),
    )
    problems = [str(p) for p in samples.problems]
    if preview is not None:
        problems += write_preview(preview, samples, fed.classes, plan)
    return DataCheck(
        data=str(source),
        usable=len(samples),
        classes=list(fed.classes),
        class_counts=samples.class_counts(len(fed.classes)),
        problems=problems,
        preprocess=preprocess_lines(plan.preprocess, plan.augment) + _as_stored(samples),
        preview=str(preview) if preview is not None else None,
        samples=_provenance(samples, fed.classes),
    )


def _as_stored(samples: Samples) -> list[str]:
    """Images held in an npz are fed as stored: say which of the plan's steps pass them by."""
    if not samples.stored_images:
        return []
    return ["npz images are fed as stored: resize, intensity, normalize and augment do not apply"]


def _provenance(samples: Samples, classes: tuple[str, ...]) -> list[dict[str, str]]:
    """The file, frame and label of every usable sample that is a frame of a file."""
    index = samples.index
    out = []
    for i in range(len(index)):
        frame = index.frame(i)
        if frame.startswith(("t=", "frame=")):  # not a whole file, nor a table's row
            label = classes[int(index.targets[i])]
            out.append({"source": index.source(i), "frame": frame, "label": label})
    return out


def write_preview(path: Path, samples: Samples, classes: tuple[str, ...], plan: Plan) -> list[str]:
    """The ``--preview`` grid of a few samples; returns the problems met reading them."""
    rows, problems = [], []
    for k in pick(samples.y):
        try:
            x = _table_image(samples, k) if samples.is_table else samples.scaled(k)
        except DataError as exc:  # the plan's preprocessing cannot take it
            problems.append(exc.one_line())
            continue
        caption = f"{classes[int(samples.y[k])]}: {Path(samples.where(k)).name}"
        if samples.is_table:  # training feeds a table's rows as they are: no augmentation
            rows.append(([x], caption))
        else:
            rows.append((cells(x, plan.augment, samples.record_id(k), plan.seed), caption))
    write_png(path, render_grid(rows, samples.preprocessor.input_shape))
    return problems


def _table_image(samples: Samples, k: int) -> np.ndarray:
    """An npz row of image shape as the network gets it, stretched to [0, 1] to be seen."""
    x = samples.sample(k).reshape(samples.preprocessor.input_shape)
    low, high = float(np.nanmin(x)), float(np.nanmax(x))
    return (x - low) / (high - low) if high > low else np.zeros_like(x)
