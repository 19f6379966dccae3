"""Local training exactly per a package's plan: optimizer, warmup, seed, FedProx, resume, DDP.

The loop reads straight down: a seeded permutation of the samples per epoch, batches decoded
by DataLoader workers in that order (``site_kit.data.stream``), one optimizer step per
batch, a checkpoint after every epoch. Each epoch's shuffling, augmentation and dropout are
seeded from (seed, epoch) alone, so a resumed run continues exactly as an uninterrupted one
would, and the number of workers changes nothing but the speed.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from flsilo.format.manifest import Plan
from flsilo.format.tensorsets import frozen_tensors
from flsilo.models.norms import hold_frozen_batchnorms
from flsilo.runtime import signals
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.tasks import task_for
from site_kit.checkpoint import Checkpoint
from site_kit.data import Dataset
from site_kit.data.samples import Samples
from site_kit.data.stream import batches as load_batches
from site_kit.privacy import DPRun, start_private


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job (world 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    epochs: int
    loss: float
    samples_per_second: float
    resumed: bool = False


@dataclass(frozen=True)
class BatchReport:
    epoch: int
    batch: int
    batches: int
    loss: float
    samples_per_second: float


@dataclass(frozen=True)
class TrainResult:
    epochs_run: int
    resumed_from_epoch: int
    seconds: float
    samples_per_second: float
    last_loss: float


ProgressCallback = Callable[[EpochReport | BatchReport], None]


def to_device(y: object, device: torch.device) -> object:
    """A batch's targets on ``device``: a tensor, or each tensor of a list (variable length)."""
    if isinstance(y, torch.Tensor):
        return y.to(device)
    if isinstance(y, list):
        return [t.to(device) if isinstance(t, torch.Tensor) else t for t in y]
    return y


def pick_device(requested: str, dist: DistContext) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                "--device cuda was asked for but no CUDA GPU is available",
                code=Code.NO_GPU,
                hint="use --device cpu or auto",
            )
        return torch.device(
            "cuda", dist.local_rank if dist.world > 1 else torch.cuda.current_device()
        )
    if requested not in ("cpu", "mps"):
        raise UsageError(f"unknown device {requested!r}", hint="use auto, cpu, cuda or mps")
    return torch.device(requested)


def init_distributed(device_request: str) -> DistContext:
    """Join the torchrun job if there is one: nccl on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_request in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world=world, local_rank=local_rank)


def derive_seed(plan_seed: int, site: str) -> int:
    """Each site's training seed: fixed by the package's seed and the site id."""
    digest = hashlib.sha256(f"{plan_seed}:{site}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def freeze_parameters(
    model: torch.nn.Module,
    globs: tuple[str, ...],
    adapters: str = "",
    head: tuple[str, ...] = (),
) -> set[str]:
    """Stop gradients for the plan's frozen tensors; return their state-dict names.

    With adapters everything but their B matrices and the ``head`` tensors is frozen."""
    frozen = frozen_tensors(model.state_dict(), globs, adapters, head)
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    hold_frozen_batchnorms(model, frozen)  # frozen BatchNorm keeps the package's statistics
    return frozen


def make_optimizer(params: list[torch.nn.Parameter], plan: Plan) -> torch.optim.Optimizer:
    if plan.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=plan.lr,
            momentum=plan.momentum,
            nesterov=plan.nesterov and plan.momentum > 0,
            weight_decay=plan.weight_decay,
        )
    if plan.optimizer == "adam":
        return torch.optim.Adam(params, lr=plan.lr, weight_decay=plan.weight_decay)
    return torch.optim.AdamW(params, lr=plan.lr, weight_decay=plan.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, plan: Plan
) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = plan.warmup_steps
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    )


def train(
    model: torch.nn.Module,
    data: Dataset | Samples,
    plan: Plan,
    *,
    seed: int,
    device: torch.device,
    checkpoint: Checkpoint | None = None,
    dist: DistContext | None = None,
    progress: ProgressCallback | None = None,
    dp: DPRun | None = None,
    workers: int = 0,
) -> TrainResult:
    """Train ``model`` in place for the plan's local epochs, resuming from ``checkpoint``.

    A plan with DP trains with DP-SGD (site_kit.privacy); ``dp`` carries the round's spend and
    secret, and ``model`` keeps its own parameter names (Opacus's wrapper stays inside).
    """
    dist = dist or DistContext()
    task = task_for(plan)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if plan.fedprox_mu > 0 else None
    optimizer = make_optimizer(params, plan)
    scheduler = make_scheduler(optimizer, plan)
    start_epoch = checkpoint.load(model, optimizer, scheduler) if checkpoint else 0
    model.to(device)
    private = start_private(model, optimizer, plan, dp, len(data), device, dist.world)
    net: torch.nn.Module = private.module if private else model
    stepper = private.optimizer if private else optimizer
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    n = len(data)
    batch = max(1, plan.batch_size // dist.world)
    started = time.perf_counter()
    seen = 0
    last_loss = float("nan")
    if progress and start_epoch:
        progress(EpochReport(start_epoch, plan.local_epochs, float("nan"), 0.0, resumed=True))
    for epoch in range(start_epoch, plan.local_epochs):
        if private is None:
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(seed + 1_000_003 * epoch)
            )
            if dist.world > 1:
                order = order[: n - n % dist.world][dist.rank :: dist.world]
            batches = (len(order) + batch - 1) // batch
            batch_indices: Iterator[list[int]] = (
                order[b * batch : (b + 1) * batch].tolist() for b in range(batches)
            )
        else:  # Poisson sampling from the round's secret, as the accountant assumes
            batches = private.steps_per_epoch
            batch_indices = (b.tolist() for b in private.epoch_batches(epoch))
        torch.manual_seed(seed + epoch)
        net.train()
        epoch_start = time.perf_counter()
        epoch_loss = torch.zeros((), device=device)
        epoch_seen = 0
        next_report = epoch_start + 0.5
        loader = load_batches(
            data, batch_indices, workers=workers, epoch=epoch, seed=seed, pin=device.type == "cuda"
        )
        for b, (cpu_x, cpu_y) in enumerate(loader):
            signals.check()  # a signal whose exception a worker fork's hook swallowed
            xb, yb = cpu_x.to(device), to_device(cpu_y, device)
            if private is None:
                loss = task.loss(net, xb, yb, "mean")
                loss_sum = loss.detach() * len(xb)
            else:  # per-sample gradients of the summed loss; Opacus clips, noises, averages
                loss = task.loss(net, xb, yb, "sum")
                loss_sum = loss.detach()
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                loss = loss + 0.5 * plan.fedprox_mu * prox
            stepper.zero_grad(set_to_none=True)
            loss.backward()
            stepper.step()
            scheduler.step()
            epoch_loss += loss_sum
            epoch_seen += len(xb)
            if progress and time.perf_counter() >= next_report:
                next_report = time.perf_counter() + 0.5
                done = (b + 1) * batch * dist.world
                rate = done / max(time.perf_counter() - epoch_start, 1e-9)
                mean_loss = float(loss_sum) / max(len(xb), 1)
                progress(BatchReport(epoch + 1, b + 1, batches, mean_loss, rate))
        seen_epoch = epoch_seen * dist.world
        seen += seen_epoch
        last_loss = float(epoch_loss) / max(epoch_seen, 1)
        rate = seen_epoch / max(time.perf_counter() - epoch_start, 1e-9)
        if checkpoint and dist.is_main:
            checkpoint.save(epoch + 1, model, optimizer, scheduler, {"last_loss": last_loss})
        dist.barrier()
        if progress:
            progress(EpochReport(epoch + 1, plan.local_epochs, last_loss, rate))
    if private:
        private.close()
    seconds = time.perf_counter() - started
    return TrainResult(
        epochs_run=plan.local_epochs - start_epoch,
        resumed_from_epoch=start_epoch,
        seconds=seconds,
        samples_per_second=seen / seconds if seconds > 0 else 0.0,
        last_loss=last_loss,
    )
