"""A round's data at a site: the indexed samples, split into training and validation.

The data is indexed once into the site workspace (``site_kit.data.index``) and read per
batch; nothing here decodes a whole data set. In a ``torchrun`` job the first rank
refreshes the index and the others read it after it, so files are hashed once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from flsilo.format import manifest as mf
from flsilo.plans.federation import DataSpec
from flsilo.plans.plan import task_spec
from flsilo.runtime.errors import UsageError
from site_kit.data.cache import with_cache
from site_kit.data.samples import Samples, open_samples
from site_kit.preprocess import build
from site_kit.training import DistContext, derive_seed
from site_kit.workspace import SiteWorkspace


@dataclass
class SiteData:
    """The site's usable samples, split into training and validation sets."""

    train: Samples
    val: Samples
    skipped: int


def data_spec(model: mf.ModelInfo) -> DataSpec:
    return DataSpec(label_column=model.label_column, feature_columns=model.feature_columns)


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stable train/validation split of ``n`` samples."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fraction) if n > 1 else 0
    n_val = min(n_val, n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def load_site_data(
    ws: SiteWorkspace,
    model: mf.ModelInfo,
    plan: mf.Plan,
    *,
    data: Path | None,
    data_format: str | None,
    val: Path | None,
    skip_bad: bool,
    dist: DistContext | None = None,
    cache: Path | None = None,
    workers: int = 0,
) -> SiteData:
    """Index the round's data (the request's, else the one set at site init) and split it.

    With ``cache`` (``--cache DIR``) images are read from decoded copies at the plan's size
    (``site_kit.data.cache``), built with ``workers`` processes on first use.
    """
    dist = dist or DistContext()
    source = data or ws.recorded_data()
    if source is None:
        raise UsageError(
            "no training data given", hint="pass --data PATH (or set it at 'flsilo site init')"
        )
    fmt = data_format or (ws.config.data_format if data is None else None)
    preprocess, augment = plan.preprocess, plan.augment

    def read(path: Path, path_format: str | None) -> Samples:
        samples = open_samples(
            path,
            path_format,
            model.classes,
            model.input_shape,
            data_spec(model),
            skip_bad=skip_bad,
            preprocess=preprocess,
            store=ws.root,
            task=task_spec(plan),
        )
        if augment.active and len(model.input_shape) == 3:
            kept = samples.preprocessor.preprocess
            samples = replace(samples, preprocessor=build(kept, model.input_shape, augment))
        return samples if cache is None else with_cache(samples, cache, workers)

    def read_all() -> SiteData:
        samples = read(source, fmt)
        if val is not None:
            val_set = read(val, None)
            return SiteData(samples, val_set, samples.skipped + val_set.skipped)
        split_seed = derive_seed(0, ws.config.site_id)
        train_idx, val_idx = split_validation(len(samples), plan.val_fraction, split_seed)
        return SiteData(samples.subset(train_idx), samples.subset(val_idx), samples.skipped)

    if dist.world == 1:
        return read_all()
    if dist.is_main:  # the first rank refreshes the stored index; the others find it fresh
        try:
            return read_all()
        finally:
            dist.barrier()
    dist.barrier()
    return read_all()
