"""One site round: verify the package, train per its plan, evaluate, export the signed bundle."""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors
import torch

from flsilo import manifest as mf
from flsilo.artifact import Verified, write_artifact
from flsilo.atomic import WorkspaceLock, remove_stale_temps
from flsilo.errors import PolicyError, UsageError
from flsilo.federation import DataSpec
from flsilo.keys import PassphraseSource, load_private_key
from flsilo.models.registry import build_model, code_digest
from flsilo.plan import dp_of
from flsilo.torchio import load_weights, state_to_raw, tensors_from_bytes
from site_kit.checkpoint import Checkpoint
from site_kit.data import Dataset, load_dataset
from site_kit.evaluation import Evaluation, evaluate
from site_kit.privacy import prepare_round
from site_kit.training import (
    DistContext,
    ProgressCallback,
    TrainResult,
    derive_seed,
    init_distributed,
    pick_device,
    train,
)
from site_kit.workspace import SiteWorkspace


@dataclass(frozen=True)
class TrainOutcome:
    bundle: Path | None
    sha256: str | None
    manifest: mf.Manifest | None
    package: Path
    global_eval: Evaluation | None
    trained_eval: Evaluation | None
    result: TrainResult
    train_samples: int
    val_samples: int
    skipped: int
    class_counts: list[int]
    rank: int


def verified_model(verified: Verified, data: bytes) -> torch.nn.Module:
    """Build the package's model with local code whose digest matches, and load its weights."""
    info = verified.manifest.model
    local = code_digest(info.spec)
    if local != info.code_digest:
        raise PolicyError(
            f"the local code of model {info.spec!r} differs from the hub's "
            f"(digest {local[:12]}… here, {info.code_digest[:12]}… in the package)",
            path=verified.path,
            code="model-code-mismatch",
            hint="install the flsilo (or plug-in) version the hub uses, then rerun",
        )
    model = build_model(info.spec, info.input_shape, len(info.classes))
    load_weights(model, tensors_from_bytes(data), str(verified.path))
    return model


def data_spec(model: mf.ModelInfo) -> DataSpec:
    return DataSpec(label_column=model.label_column, feature_columns=model.feature_columns)


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stable train/validation split of ``n`` samples."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fraction) if n > 1 else 0
    n_val = min(n_val, n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def software() -> dict[str, str]:
    return mf.software_versions(
        {
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        }
    )


def train_round(
    package: Path,
    site_dir: Path,
    *,
    data: Path | None = None,
    data_format: str | None = None,
    val: Path | None = None,
    device: str = "auto",
    skip_bad: bool = False,
    passphrase: PassphraseSource,
    progress: ProgressCallback | None = None,
) -> TrainOutcome:
    dist = init_distributed(device)
    ws = SiteWorkspace.open(site_dir)
    lock = WorkspaceLock(ws.root, "site workspace") if dist.is_main else contextlib.nullcontext()
    with lock:
        try:
            return _train_locked(
                package, ws, dist, data, data_format, val, device, skip_bad, passphrase, progress
            )
        finally:
            if dist.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def _train_locked(
    package: Path,
    ws: SiteWorkspace,
    dist: DistContext,
    data_path: Path | None,
    data_format: str | None,
    val_path: Path | None,
    device_request: str,
    skip_bad: bool,
    passphrase: PassphraseSource,
    progress: ProgressCallback | None,
) -> TrainOutcome:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    key = load_private_key(ws.key_path, passphrase) if dist.is_main else None
    buffer = io.BytesIO()
    verified = ws.accept_package(package, copy_to=buffer)
    m = verified.manifest
    assert m.package is not None
    if m.package.final or m.package.plan is None:
        raise PolicyError(
            f"round {m.round} is the federation's final package: there is nothing to train",
            path=package,
            code="final-package",
            hint="evaluate it with 'flsilo evaluate' or deploy it",
        )
    plan = m.package.plan
    site = ws.config.site_id
    bundle_path = ws.outbox / mf.artifact_name(m.federation, m.round, site)
    if bundle_path.exists():
        raise UsageError(
            f"this site already trained on round {m.round}",
            path=bundle_path,
            code="already-trained",
            hint="carry that bundle and its .sig to the hub; bundles are never overwritten",
        )
    model = verified_model(verified, buffer.getvalue())
    del buffer
    remove_stale_temps(ws.outbox)

    source = data_path or (Path(ws.config.data) if ws.config.data else None)
    if source is None:
        raise UsageError(
            "no training data given", hint="pass --data PATH (or set it at 'flsilo site init')"
        )
    fmt = data_format or (ws.config.data_format if data_path is None else None)
    classes, shape = m.model.classes, m.model.input_shape
    dataset = load_dataset(source, fmt, classes, shape, data_spec(m.model), skip_bad=skip_bad)
    split_seed = derive_seed(0, site)
    if val_path is not None:
        train_set: Dataset = dataset
        val_set: Dataset = load_dataset(
            val_path, None, classes, shape, data_spec(m.model), skip_bad=skip_bad
        )
    else:
        train_idx, val_idx = split_validation(len(dataset), plan.val_fraction, split_seed)
        train_set, val_set = dataset.subset(train_idx), dataset.subset(val_idx)
    timings["load_seconds"] = round(time.perf_counter() - t0, 3)

    work = ws.work / f"r{m.round:04d}-{verified.sha256[:12]}"
    dp_run = None
    if dp_of(plan) is not None and dist.is_main:  # refuses a round past the budget, writing nothing
        dp_run = prepare_round(ws.root, work, plan, len(train_set), m.round, verified.sha256)
    device = pick_device(device_request, dist)
    checkpoint = Checkpoint(work)
    global_eval = None
    if dist.is_main and len(val_set):
        t1 = time.perf_counter()
        model.to(device)
        global_eval = evaluate(model, val_set, len(classes), device)
        timings["eval_seconds"] = round(time.perf_counter() - t1, 3)
    dist.barrier()

    seed = derive_seed(plan.seed, site)
    result = train(
        model,
        train_set,
        plan,
        seed=seed,
        device=device,
        checkpoint=checkpoint,
        dist=dist,
        progress=progress,
        dp=dp_run,
    )
    timings["train_seconds"] = round(result.seconds, 3)
    timings["samples_per_second"] = round(result.samples_per_second, 1)

    trained_eval = None
    bundle: Path | None = None
    sha: str | None = None
    manifest: mf.Manifest | None = None
    if dist.is_main:
        if len(val_set):
            trained_eval = evaluate(model, val_set, len(classes), device)
        manifest = mf.Manifest(
            kind=mf.KIND_BUNDLE,
            format_version=mf.FORMAT_VERSION,
            federation=m.federation,
            round=m.round,
            created_at=mf.now_utc(),
            software=software(),
            model=m.model,
            bundle=mf.BundleInfo(
                site=site,
                base_package_sha256=verified.sha256,
                num_samples=len(train_set),
                plan=plan,
                metrics_global=global_eval.metrics() if global_eval else None,
                metrics_trained=trained_eval.metrics() if trained_eval else None,
                timings=timings,
                skipped_samples=dataset.skipped + (val_set.skipped if val_path else 0),
                world_size=dist.world,
                dp=dp_run.report(plan) if dp_run else None,
            ),
        )
        assert key is not None
        sha = write_artifact(bundle_path, state_to_raw(model.state_dict()), manifest, key)
        bundle = bundle_path
        ws.record_round(m.round, verified.sha256)
        ws.clear_work(work)
    dist.barrier()
    return TrainOutcome(
        bundle=bundle,
        sha256=sha,
        manifest=manifest,
        package=package,
        global_eval=global_eval,
        trained_eval=trained_eval,
        result=result,
        train_samples=len(train_set),
        val_samples=len(val_set),
        skipped=dataset.skipped + (val_set.skipped if val_path else 0),
        class_counts=train_set.class_counts(len(classes)),
        rank=dist.rank,
    )
