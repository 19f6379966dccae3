"""One site round: verify the package, train per its plan, evaluate, export the signed bundle."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors
import torch

from flsilo.format import manifest as mf
from flsilo.format.artifact import Verified, write_artifact
from flsilo.format.tensorsets import ROUND_FEDSTATS, ROUND_STATISTICS
from flsilo.fs.atomic import WorkspaceLock, remove_stale_temps
from flsilo.models.torchio import state_to_raw
from flsilo.plans.plan import dp_of
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError, UsageError
from flsilo.signing.keys import PassphraseSource, PrivateKey, load_private_key
from flsilo.tasks import require_task, task_for
from site_kit import record as site_record
from site_kit.checkpoint import Checkpoint
from site_kit.data.stream import default_workers
from site_kit.evaluation import Evaluation, evaluate
from site_kit.fedstats import input_statistics
from site_kit.fisher import diagonal_fisher, with_fisher
from site_kit.freshness import check_fresh
from site_kit.inputsummary import summarize
from site_kit.packagemodel import verified_model
from site_kit.privacy import DPRun, prepare_round
from site_kit.sitedata import SiteData, load_site_data
from site_kit.statistics import (
    check_cell_size,
    reveals,
    statistics_tensors,
    streamed_statistics,
)
from site_kit.training import (
    DistContext,
    ProgressCallback,
    TrainResult,
    derive_seed,
    freeze_parameters,
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


def software() -> dict[str, str]:
    return mf.software_versions(
        {
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        }
    )


@dataclass(frozen=True)
class TrainRequest:
    """What the operator asked for beyond the package: data, device, key, options."""

    data: Path | None = None
    data_format: str | None = None
    val: Path | None = None
    device: str = "auto"
    skip_bad: bool = False
    key: Path | None = None  # overrides the key recorded at site init
    accept_expired: bool = False  # train on an expired package anyway (recorded in the bundle)
    workers: int | None = None  # DataLoader worker processes; None: default_workers()
    cache: Path | None = None  # decoded images at the plan's size (--cache DIR)

    @property
    def worker_count(self) -> int:
        return default_workers() if self.workers is None else self.workers


@dataclass
class RoundJob:
    """A verified package this site may train on: its plan, model and bundle to write."""

    package: Path
    verified: Verified
    plan: mf.Plan
    model: torch.nn.Module
    bundle_path: Path
    work: Path
    expired_override: str | None = None  # when the operator accepted an expired package


def train_round(
    package: Path,
    site_dir: Path,
    request: TrainRequest = TrainRequest(),
    *,
    passphrase: PassphraseSource,
    progress: ProgressCallback | None = None,
) -> TrainOutcome:
    """Verify PACKAGE, train on the site's data per its plan, and write the signed bundle."""
    if request.workers is not None and request.workers < 0:
        raise UsageError("--workers cannot be negative", hint="use 0 to decode in this process")
    dist = init_distributed(request.device)
    ws = SiteWorkspace.open(site_dir)
    lock = WorkspaceLock(ws.root, "site workspace") if dist.is_main else contextlib.nullcontext()
    with lock:
        try:
            outcome = _train_locked(package, ws, dist, request, passphrase, progress)
        except BaseException:
            _leave_process_group(dist, clean=False)
            raise
        _leave_process_group(dist, clean=True)
        return outcome


def _leave_process_group(dist: DistContext, *, clean: bool) -> None:
    """Tear the process group down only after DDP's reducer is gone, all ranks together.

    DDP holds reference cycles, so the garbage collector may free its reducer after the
    process group is destroyed, at interpreter exit: that aborted a rank ("terminate called
    without an active exception") in about one run in eight, after the bundle was written.
    """
    if dist.world > 1 and torch.distributed.is_initialized():
        gc.collect()
        if clean:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _train_locked(
    package: Path,
    ws: SiteWorkspace,
    dist: DistContext,
    request: TrainRequest,
    passphrase: PassphraseSource,
    progress: ProgressCallback | None,
) -> TrainOutcome:
    t0 = time.perf_counter()
    job = open_package(ws, package, accept_expired=request.accept_expired)
    if dist.is_main:
        m = job.verified.manifest
        site_record.note_package(ws.root, m.round, package.name, job.verified.sha256)
    data = load_site_data(
        ws,
        job.verified.manifest.model,
        job.plan,
        data=request.data,
        data_format=request.data_format,
        val=request.val,
        skip_bad=request.skip_bad,
        dist=dist,
        cache=request.cache,
        workers=request.worker_count,
    )
    timings = {"load_seconds": round(time.perf_counter() - t0, 3)}
    if job.plan.kind in (ROUND_STATISTICS, ROUND_FEDSTATS):
        return statistics_round(ws, job, data, request, dist, passphrase, timings)
    head = job.verified.manifest.model.head
    frozen = freeze_parameters(job.model, job.plan.freeze, job.plan.adapters, head)
    dp_run = None
    if dp_of(job.plan) is not None and dist.is_main:  # refuses a round past the budget
        m = job.verified.manifest
        dp_run = prepare_round(
            ws.root, job.work, job.plan, len(data.train), m.round, job.verified.sha256
        )
    # Every refusal is behind us: the run ends in a signature, so unlock the key now.
    key = unlock_site_key(ws, request.key, passphrase) if dist.is_main else None
    device = pick_device(request.device, dist)
    global_eval, result, trained_eval = train_and_evaluate(
        job, data, ws.config.site_id, device, dist, timings, progress, dp_run, request.worker_count
    )
    bundle = sha = manifest = None
    if dist.is_main:
        assert key is not None
        fisher = site_fisher(job, data, ws.config.site_id, device, timings, request.worker_count)
        manifest = bundle_manifest(
            job, data, ws.config.site_id, timings, dist, global_eval, trained_eval, dp_run
        )
        trained = {k: v for k, v in job.model.state_dict().items() if k not in frozen}
        fisher = {k: v for k, v in fisher.items() if k in trained}
        manifest = replace_bundle(manifest, fisher=tuple(sorted(fisher)))
        if dp_run is None:  # for the hub's drift flags; a DP bundle carries none
            manifest = replace_bundle(manifest, inputs=summarize(data, job.plan))
        trained = with_fisher(trained, fisher)
        sha = write_artifact(job.bundle_path, state_to_raw(trained), manifest, key)
        bundle = job.bundle_path
        record_trained(ws, job, data, request, sha, dp_run)
        ws.record_round(manifest.round, job.verified.sha256)
        ws.clear_work(job.work)
    dist.barrier()
    return TrainOutcome(
        bundle=bundle,
        sha256=sha,
        manifest=manifest,
        package=package,
        global_eval=global_eval,
        trained_eval=trained_eval,
        result=result,
        train_samples=len(data.train),
        val_samples=len(data.val),
        skipped=data.skipped,
        class_counts=data.train.class_counts(len(job.verified.manifest.model.classes)),
        rank=dist.rank,
    )


def statistics_round(
    ws: SiteWorkspace,
    job: RoundJob,
    data: SiteData,
    request: TrainRequest,
    dist: DistContext,
    passphrase: PassphraseSource,
    timings: dict[str, float],
) -> TrainOutcome:
    """Answer a closed-form round: head statistics of every sample, signed as a bundle.

    Nothing trains; the plan's val_fraction is 0, so ``data.train`` is every sample.
    """
    m = job.verified.manifest
    classes = m.model.classes
    counts = data.train.class_counts(len(classes))
    started = time.perf_counter()
    if job.plan.kind == ROUND_FEDSTATS:  # input statistics: the federation's normalisation
        stats = input_statistics(data.train, job.plan, m.model.input_shape, job.package)
        key = unlock_site_key(ws, request.key, passphrase) if dist.is_main else None
    else:
        check_cell_size(np.asarray(counts), job.plan, classes, job.package)
        key = unlock_site_key(ws, request.key, passphrase) if dist.is_main else None
        device = pick_device(request.device, dist)
        stats = streamed_statistics(
            job.model, data.train, len(classes), job.plan.head_solver, device, request.worker_count
        )
    seconds = time.perf_counter() - started
    timings["statistics_seconds"] = round(seconds, 3)
    manifest = sha = None
    if dist.is_main:
        assert key is not None
        manifest = bundle_manifest(
            job, data, ws.config.site_id, timings, dist, None, None, None, revealed=reveals(stats)
        )
        sha = write_artifact(job.bundle_path, statistics_tensors(stats), manifest, key)
        ws.record_round(m.round, job.verified.sha256)
        record_trained(ws, job, data, request, sha, None)
    dist.barrier()
    rate = len(data.train) / max(seconds, 1e-9)
    return TrainOutcome(
        bundle=job.bundle_path if dist.is_main else None,
        sha256=sha,
        manifest=manifest,
        package=job.package,
        global_eval=None,
        trained_eval=None,
        result=TrainResult(0, 0, seconds, rate, float("nan")),
        train_samples=len(data.train),
        val_samples=0,
        skipped=data.skipped,
        class_counts=list(counts),
        rank=dist.rank,
    )


def record_trained(
    ws: SiteWorkspace,
    job: RoundJob,
    data: SiteData,
    request: TrainRequest,
    bundle_sha: str,
    dp_run: DPRun | None,
) -> None:
    """Append the round to the site's own hash-chained record (site_kit.record)."""
    overrides = {  # what the operator chose on the command line, beyond the workspace defaults
        "data": str(request.data) if request.data else None,
        "data_format": request.data_format,
        "val": str(request.val) if request.val else None,
        "device": request.device if request.device != "auto" else None,
        "skip_bad": request.skip_bad or None,
        "workers": request.workers,
        "cache": str(request.cache) if request.cache else None,
        "key": str(request.key) if request.key else None,
    }
    spent = None
    if dp_run is not None:
        report = dp_run.report(job.plan)
        spent = site_record.Spent(report.epsilon_round, report.epsilon_total, report.delta)
    site_record.record(
        ws.root,
        site_record.Trained(
            round=job.verified.manifest.round,
            package_sha256=job.verified.sha256,
            bundle=job.bundle_path.name,
            bundle_sha256=bundle_sha,
            data_sha256_salted=site_record.data_digest(ws.root, data.train.digest()),
            train_samples=len(data.train),
            val_samples=len(data.val),
            skipped=data.skipped,
            overrides={k: v for k, v in overrides.items() if v is not None},
            privacy_budget_spent=spent,
        ),
    )


def open_package(ws: SiteWorkspace, package: Path, *, accept_expired: bool = False) -> RoundJob:
    """Verify the package for this site, refuse a final or already-trained round, build the model."""
    buffer = io.BytesIO()
    verified = ws.accept_package(package, copy_to=buffer)
    m = verified.manifest
    assert m.package is not None
    if m.package.final or m.package.plan is None:
        raise PolicyError(
            f"round {m.round} is the federation's final package: there is nothing to train",
            path=package,
            code=Code.FINAL_PACKAGE,
            hint="evaluate it with 'flsilo evaluate' or deploy it",
        )
    require_task(m.package.plan, package)
    expired_override = check_fresh(m, package, accept_expired=accept_expired)
    bundle_path = ws.outbox / mf.artifact_name(m.federation, m.round, ws.config.site_id)
    if bundle_path.exists():
        raise UsageError(
            f"this site already trained on round {m.round}",
            path=bundle_path,
            code=Code.ALREADY_TRAINED,
            hint="carry that bundle and its .sig to the hub; bundles are never overwritten",
        )
    model = verified_model(verified, buffer.getvalue())
    remove_stale_temps(ws.outbox)
    work = ws.work / f"r{m.round:04d}-{verified.sha256[:12]}"
    return RoundJob(package, verified, m.package.plan, model, bundle_path, work, expired_override)


def unlock_site_key(
    ws: SiteWorkspace, override: Path | None, passphrase: PassphraseSource
) -> PrivateKey:
    """The site's private key (asking for its passphrase), refused unless it is the enrolled one."""
    path = override or ws.key_path
    key = load_private_key(path, passphrase)
    ws.check_signing_key(key, path)
    return key


def train_and_evaluate(
    job: RoundJob,
    data: SiteData,
    site: str,
    device: torch.device,
    dist: DistContext,
    timings: dict[str, float],
    progress: ProgressCallback | None,
    dp_run: DPRun | None,
    workers: int,
) -> tuple[Evaluation | None, TrainResult, Evaluation | None]:
    """Score the incoming model, train it per the plan (resuming from a checkpoint), score it again."""
    info = job.verified.manifest.model
    classes, task = len(info.classes), task_for(job.plan)
    global_eval = None
    if dist.is_main and len(data.val):
        t1 = time.perf_counter()
        job.model.to(device)
        global_eval = evaluate(
            job.model, data.val, classes, device, workers=workers, task=task, classes=info.classes
        )
        timings["eval_seconds"] = round(time.perf_counter() - t1, 3)
    dist.barrier()
    result = train(
        job.model,
        data.train,
        job.plan,
        seed=derive_seed(job.plan.seed, site),
        device=device,
        checkpoint=Checkpoint(job.work),
        dist=dist,
        progress=progress,
        dp=dp_run,
        workers=workers,
    )
    timings["train_seconds"] = round(result.seconds, 3)
    timings["samples_per_second"] = round(result.samples_per_second, 1)
    trained_eval = None
    if dist.is_main and len(data.val):
        trained_eval = evaluate(
            job.model, data.val, classes, device, workers=workers, task=task, classes=info.classes
        )
    return global_eval, result, trained_eval


def site_fisher(
    job: RoundJob,
    data: SiteData,
    site: str,
    device: torch.device,
    timings: dict[str, float],
    workers: int,
) -> dict[str, torch.Tensor]:
    """The trained model's diagonal Fisher on the training data, when the plan merges by it."""
    if job.plan.merge != "fisher":
        return {}
    t0 = time.perf_counter()
    seed = derive_seed(job.plan.seed, site)
    fisher = diagonal_fisher(job.model, data.train, device, seed=seed, workers=workers)
    timings["fisher_seconds"] = round(time.perf_counter() - t0, 3)
    return fisher


def replace_bundle(manifest: mf.Manifest, **changes: object) -> mf.Manifest:
    assert manifest.bundle is not None
    return dataclasses.replace(
        manifest,
        bundle=dataclasses.replace(manifest.bundle, **changes),  # type: ignore[arg-type]
    )


def bundle_manifest(
    job: RoundJob,
    data: SiteData,
    site: str,
    timings: dict[str, float],
    dist: DistContext,
    global_eval: Evaluation | None,
    trained_eval: Evaluation | None,
    dp_run: DPRun | None,
    *,
    revealed: tuple[str, ...] = (),
) -> mf.Manifest:
    """The manifest of this site's bundle: what was trained on, how, and how it scored.

    A statistics bundle (closed-form round) has no scores and says what it ``revealed``.
    """
    m = job.verified.manifest
    return mf.Manifest(
        kind=mf.KIND_BUNDLE,
        format_version=mf.FORMAT_VERSION,
        federation=m.federation,
        round=m.round,
        created_at=mf.now_utc(),
        software=software(),
        model=m.model,
        bundle=mf.BundleInfo(
            site=site,
            base_package_sha256=job.verified.sha256,
            num_samples=len(data.train),
            plan=job.plan,
            metrics_global=global_eval.metrics() if global_eval else None,
            metrics_trained=trained_eval.metrics() if trained_eval else None,
            timings=timings,
            skipped_samples=data.skipped,
            world_size=dist.world,
            dp=dp_run.report(job.plan) if dp_run else None,
            expired_package_accepted=job.expired_override,
            reveals=revealed,
        ),
    )
