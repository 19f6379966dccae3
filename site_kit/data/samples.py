"""A site's usable samples: its index in memory, each sample decoded when a batch needs it.

``open_samples`` indexes (or refreshes the stored index of) a data source and returns
``Samples``: the records' targets and identities as flat arrays, and ``sample(k)``, which
decodes record k and applies the plan's preprocessing. Tables (csv, npz) are small and
keep their raw rows in memory; images are decoded from their files every time. Nothing
here imports torch: ``site check-data`` reads data the way training does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flsilo.plans.federation import DataSpec
from flsilo.plans.plan import TaskSpec
from flsilo.plans.preprocessing import Preprocess
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError
from flsilo.tasks import Target, load_task
from site_kit.data import (
    BadRecord,
    DataContext,
    Dataset,
    adapter,
    check_exists,
    data_root,
    guess_format,
    refuse_bad,
    refuse_empty,
)
from site_kit.data.index import INDEX_DIR, DataIndex, build_index, index_key, save_index
from site_kit.data.records import RawImage
from site_kit.preprocess import PreprocessError, Preprocessor, augment_with_flip, build


@dataclass
class Samples:
    """Usable samples of one data source, in index order (or a subset: ``positions``)."""

    fmt: str
    ctx: DataContext
    index: DataIndex
    preprocessor: Preprocessor
    positions: np.ndarray
    values: np.ndarray | None = None  # tables: raw rows, one per index record
    problems: list[BadRecord] = field(default_factory=list)
    cache: Any = None  # a site_kit.data.cache.DecodedCache (--cache), images only
    _module: Any = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def __getstate__(self) -> dict[str, Any]:  # worker processes import the adapter again
        return {**self.__dict__, "_module": None}

    @property
    def y(self) -> np.ndarray:
        return self.index.targets[self.positions]

    @property
    def skipped(self) -> int:
        return len(self.problems)

    @property
    def is_table(self) -> bool:
        return self.values is not None

    @property
    def stored_images(self) -> bool:
        """Images held as an npz's rows: fed to the network as stored, none of the plan's
        image steps (resize, intensity, normalize, augment) applied."""
        return self.is_table and len(self.preprocessor.input_shape) == 3

    def subset(self, index: np.ndarray) -> Samples:
        return replace(self, positions=self.positions[index], problems=[])

    def class_counts(self, num_classes: int) -> list[int]:
        """Samples per class (per finding, for tasks that are not classify)."""
        if self.ctx.is_classify:
            return np.bincount(self.y, minlength=num_classes).tolist()
        return load_task(self.ctx.task.name).counts(self.targets(), self.ctx.classes)

    def target(self, k: int, flipped: bool = False) -> np.ndarray:
        """Record k's target as the task decodes it (classify: its class index); a
        geometric task's (boxes) moved with the pixels, flipped with them if ``flipped``."""
        i = self.record_id(k)
        task = load_task(self.ctx.task.name)
        target = Target(int(self.index.targets[i]), self.index.label(i))
        if not task.geometric:
            return task.decode_target(target, self.ctx.task)
        size = (int(self.ctx.input_shape[-2]), int(self.ctx.input_shape[-1]))
        return task.place(target, self.preprocessor.preprocess.resize, size, flipped)

    def targets(self) -> np.ndarray:
        """Every sample's decoded target, stacked; targets of different shapes (boxes per
        image) as an object array of them."""
        items = [self.target(k) for k in range(len(self))]
        if not items:
            return np.zeros(0)
        if all(t.shape == items[0].shape for t in items):
            return np.stack(items)
        ragged = np.empty(len(items), dtype=object)
        for k, t in enumerate(items):
            ragged[k] = t
        return ragged

    def record_id(self, k: int) -> int:
        """Record k's place in the whole index (seeds its augmentation)."""
        return int(self.positions[k])

    def where(self, k: int) -> str:
        i = self.record_id(k)
        frame = self.index.frame(i)
        return str(self.ctx.root / self.index.source(i)) + (f" @ {frame}" if frame else "")

    def raw(self, k: int) -> RawImage:
        """Record k's pixels as its file holds them (images only)."""
        if self._module is None:
            self._module = adapter(self.fmt)
        i = self.record_id(k)
        try:
            raw: RawImage = self._module.decode(self.index.record(i), self.ctx)
            return raw
        except BadRecord as exc:
            if getattr(self._module, "CHECK_ON_INDEX", True):
                raise _changed(exc.where, exc.why) from exc
            raise _undecodable(exc.where, exc.why) from exc

    def scaled(self, k: int) -> np.ndarray:
        """Record k scaled and resized to the input shape, before augmentation and normalisation."""
        if self.cache is not None:
            cached: np.ndarray = self.cache.read(self.record_id(k))
            return cached
        try:
            return self.preprocessor.scaled(self.raw(k))
        except PreprocessError as exc:
            raise _unusable(self.where(k), str(exc)) from exc

    def sample(self, k: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Record k as the model's input (augmented only when ``rng`` is given).

        The same steps as ``Preprocessor.image``, with the scaled image from the cache
        when there is one.
        """
        p = self.preprocessor
        if self.values is not None:
            try:
                return p.table(self.values[self.record_id(k)])
            except PreprocessError as exc:
                raise _unusable(self.where(k), str(exc)) from exc
        return self.sample_flipped(k, rng)[0]

    def sample_flipped(
        self, k: int, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, bool]:
        """``sample`` of an image, and whether its augmentation flipped it left-right."""
        p = self.preprocessor
        x, flipped = self.scaled(k), False
        if rng is not None and p.augment.active:
            x, flipped = augment_with_flip(x, p.augment, rng)
        return p.normalized(x), flipped

    def digest(self) -> str:
        """sha256 of these records (in order) and the preprocessing they are read with."""
        spec = json.dumps(
            [self.fmt, preprocess_spec(self.preprocessor)], sort_keys=True, default=str
        )
        hasher = hashlib.sha256(b"flsilo samples v1\n")
        hasher.update(spec.encode() + b"\n")
        hasher.update(self.index.subset_digest(self.positions).encode())
        return hasher.hexdigest()


def preprocess_spec(preprocessor: Preprocessor) -> dict[str, Any]:
    """The preprocessing's settings as plain values (augmentation excluded)."""
    from dataclasses import asdict

    return {"preprocess": asdict(preprocessor.preprocess), "shape": list(preprocessor.input_shape)}


def _changed(where: str, why: str) -> DataError:
    return DataError(
        f"{why}; the file changed since the data was indexed",
        path=where,
        code=Code.BAD_RECORD,
        hint="rerun the command: the index is refreshed from the data and the file checked",
    )


def _undecodable(where: str, why: str) -> DataError:
    """A record of a format whose index checks files without decoding them (dicom, video)."""
    return DataError(
        why,
        path=where,
        code=Code.BAD_RECORD,
        hint="remove the file (or its manifest row) and rerun: this format's index checks "
        "headers, not every image, so damaged pixels are found when they are read",
    )


def _unusable(where: str, why: str) -> DataError:
    return DataError(
        f"the plan's preprocessing cannot take this sample ({why})",
        path=where,
        code=Code.BAD_RECORD,
        hint="fix or remove it, or pass --skip-bad to skip and count bad records",
    )


def open_samples(
    path: Path,
    data_format: str | None,
    classes: tuple[str, ...],
    input_shape: tuple[int, ...],
    spec: DataSpec,
    *,
    skip_bad: bool = False,
    preprocess: Preprocess | None = None,
    store: Path | None = None,
    task: TaskSpec | None = None,
) -> Samples:
    """Index ``path`` (keeping the index under ``store``, a site workspace, when given).

    Every bad record is an error naming it, or, with ``skip_bad``, skipped and counted.
    """
    check_exists(path)
    fmt = data_format or guess_format(path, input_shape, preprocess)
    module = adapter(fmt)
    ctx = DataContext(data_root(path), classes, input_shape, spec, preprocess, task or TaskSpec())
    ctx.refuse_format(path, fmt)
    values: list[np.ndarray] | None = [] if module.KIND == "table" else None
    where = store / INDEX_DIR / f"{index_key(path, fmt, ctx)}.json" if store else None
    index = build_index(path, fmt, ctx, store=where, values=values)
    refuse_bad(index.bad, skip_bad)
    refuse_empty(len(index), index.bad, path, fmt, classes)
    if where is not None:
        save_index(where, index)
    rows = None if values is None else np.stack(values).astype(np.float32, copy=False)
    return Samples(
        fmt=fmt,
        ctx=ctx,
        index=index,
        preprocessor=build(preprocess or Preprocess(), input_shape),
        positions=np.arange(len(index), dtype=np.int64),
        values=rows,
        problems=list(index.bad),
        _module=module,
    )


def load_dataset(
    path: Path,
    data_format: str | None,
    classes: tuple[str, ...],
    input_shape: tuple[int, ...],
    spec: DataSpec,
    *,
    skip_bad: bool = False,
    task: TaskSpec | None = None,
) -> Dataset:
    """Read a whole data set into memory, preprocessed by default (simulations, small sets).

    A site's training streams instead (:func:`open_samples`); this reads
    the same records through the same adapters.
    """
    samples = open_samples(
        path, data_format, classes, input_shape, spec, skip_bad=skip_bad, task=task
    )
    n = len(samples)
    x = np.empty((n, *input_shape), dtype=np.float32)
    for i in range(n):
        x[i] = samples.sample(i).reshape(input_shape)
    problems = [str(p) for p in samples.problems]
    y = samples.y.copy() if samples.ctx.is_classify else samples.targets()
    return Dataset(x, y, skipped=len(problems), problems=problems, task=samples.ctx.task)
