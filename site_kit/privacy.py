"""DP-SGD at the site: the privacy ledger, each round's spend, and the Opacus-wrapped step.

How it works, so a site's privacy officer can check it:

- The package's plan declares the mechanism (``flsilo.plans.plan.DPPlan``). Each round the
  site trains with Poisson sampling at rate q = batch_size / n, ``local_epochs * ceil(n / B)``
  steps, per-sample gradients clipped to ``clip`` and Gaussian noise of standard deviation
  ``noise_multiplier * clip`` (Opacus's ``GradSampleModule`` and ``DPOptimizer``). With a
  target epsilon per round the site derives its own noise multiplier from q and the steps.
- The ledger (``SITE_DIR/privacy.json``, flsilo's own JSON, never pickle) keeps every
  round's (noise multiplier, q, steps). The RDP accountant composes them: the total epsilon
  is *composed*, not added up. A round is entered in the ledger *before* training starts,
  so a run that is killed and resumed, or killed and abandoned, is never under-counted; a
  rerun of the same package replaces its own entry instead of adding another.
- Randomness: which samples each step uses and the noise are drawn by torch's CPU (or CUDA)
  ``torch.Generator`` (Mersenne Twister / Philox), seeded per epoch from a 256-bit secret
  drawn with ``os.urandom`` when the round starts and kept in the round's work folder (mode
  0600, deleted with it once the bundle is written). The secret never leaves the site: a
  seed the hub could know (the plan's seed) would let it subtract the noise. Opacus's
  ``secure_mode`` needs torchcsprng, which is unmaintained, so it is not used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flsilo.format.manifest import DPReport, SchemaError, from_jsonable, to_jsonable
from flsilo.fs.atomic import write_bytes, write_text
from flsilo.plans.plan import DPPlan, Plan, dp_of
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError, PolicyError, UsageError, VerificationError
from site_kit import record as site_record

if TYPE_CHECKING:
    import torch

LEDGER_FILE = "privacy.json"
LEDGER_FORMAT = "flsilo-privacy-ledger"
LEDGER_VERSION = 1
SEED_FILE = "dp-seed"
# Room for float rounding (and an accountant's last digits) when the ledger's composed
# epsilon is compared with the totals the record kept.
RECORD_SLACK = 1e-6
# RDP orders searched when converting to (epsilon, delta): Opacus's defaults plus larger ones,
# which small epsilons at large noise need.
ALPHAS: list[float] = [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)]
ALPHAS += [64.0, 80.0, 96.0, 128.0, 192.0, 256.0, 384.0, 512.0, 1024.0]


def _opacus() -> Any:
    try:
        import opacus
    except ImportError as exc:
        raise UsageError(
            "this federation trains with differential privacy, which needs Opacus",
            code=Code.DP_NEEDS_OPACUS,
            hint="install it beside flsilo: pip install 'flsilo[dp]' (offline: from the wheelhouse)",
        ) from exc
    return opacus


@dataclass(frozen=True)
class Spend:
    """One round of DP-SGD as the accountant sees it."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class LedgerEntry:
    round: int
    package_sha256: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_round: float
    epsilon_total: float
    rounds: int

    @property
    def spend(self) -> Spend:
        return Spend(self.noise_multiplier, self.sample_rate, self.steps)


@dataclass(frozen=True)
class LedgerFile:
    format: str
    version: int
    accountant: str
    delta: float
    entries: tuple[LedgerEntry, ...]


def epsilon(spends: list[Spend], delta: float) -> float:
    """The RDP accountant's epsilon at ``delta`` for these rounds composed (0 for none).

    What Opacus's ``RDPAccountant.get_epsilon`` computes, with each (noise, q) pair's
    one-step RDP kept: a round of n steps costs n times it (the accountant's own
    ``compute_rdp`` multiplies the same vector by n), the same bits. The vector costs about
    80 ms (a series per fractional order), and a ledger repeats its pair round after round.
    """
    if not spends:
        return 0.0
    analysis = _opacus().accountants.analysis.rdp
    rdp = sum([_rdp_per_step(s.noise_multiplier, s.sample_rate) * s.steps for s in spends])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": bound is valid
        eps, _ = analysis.get_privacy_spent(orders=ALPHAS, rdp=rdp, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=256)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> Any:
    """The RDP of one step at each order in ALPHAS (read-only: shared between calls)."""
    analysis = _opacus().accountants.analysis.rdp
    vector = analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=ALPHAS
    )
    vector.flags.writeable = False
    return vector


@functools.lru_cache(maxsize=64)
def noise_for_epsilon(target: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to 0.01 in epsilon) that keeps one round within target."""
    utils = _opacus().accountants.utils
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            utils.get_noise_multiplier(
                target_epsilon=target,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
                epsilon_tolerance=0.01,
                alphas=ALPHAS,
            )
        )


def plan_spend(plan: Plan, n: int) -> Spend:
    """What one round of ``plan`` on ``n`` training samples costs the accountant."""
    dp = dp_of(plan)
    assert dp is not None
    q = min(1.0, plan.batch_size / n)
    steps = plan.local_epochs * math.ceil(n / plan.batch_size)
    sigma = dp.noise_multiplier or noise_for_epsilon(dp.epsilon_per_round, dp.delta, q, steps)
    return Spend(sigma, q, steps)


class Ledger:
    """The site's privacy history across rounds, in ``SITE_DIR/privacy.json``."""

    def __init__(self, path: Path, entries: tuple[LedgerEntry, ...]) -> None:
        self.path = path
        self.entries = entries

    @classmethod
    def open(cls, site_root: Path) -> Ledger:
        path = site_root / LEDGER_FILE
        if not path.exists():
            return cls(path, ())
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            parsed: LedgerFile = from_jsonable(LedgerFile, data, "privacy ledger")
        except (OSError, ValueError, SchemaError) as exc:
            raise MalformedInputError(
                f"the privacy ledger cannot be read ({exc})",
                path=path,
                code=Code.BAD_PRIVACY_LEDGER,
                hint="restore it from backup: without it this site cannot know its spent budget",
            ) from exc
        if parsed.format != LEDGER_FORMAT or parsed.version != LEDGER_VERSION:
            raise MalformedInputError(
                f"not a version {LEDGER_VERSION} privacy ledger",
                path=path,
                code=Code.BAD_PRIVACY_LEDGER,
                hint="restore it from backup, or use the flsilo version that wrote it",
            )
        return cls(path, parsed.entries)

    def spent(self) -> float:
        return self.entries[-1].epsilon_total if self.entries else 0.0

    def project(self, plan: Plan, spend: Spend, round_: int, package_sha256: str) -> LedgerEntry:
        """The entry this round would add, with the total composed over every other round."""
        dp = dp_of(plan)
        assert dp is not None
        others = [e.spend for e in self.entries if e.package_sha256 != package_sha256]
        return LedgerEntry(
            round=round_,
            package_sha256=package_sha256,
            noise_multiplier=spend.noise_multiplier,
            sample_rate=spend.sample_rate,
            steps=spend.steps,
            epsilon_round=epsilon([spend], dp.delta),
            epsilon_total=epsilon([*others, spend], dp.delta),
            rounds=len(others) + 1,
        )

    def commit(self, entry: LedgerEntry, dp: DPPlan) -> None:
        kept = tuple(e for e in self.entries if e.package_sha256 != entry.package_sha256)
        self.entries = (*kept, entry)
        ledger = LedgerFile(LEDGER_FORMAT, LEDGER_VERSION, dp.accountant, dp.delta, self.entries)
        write_text(self.path, json.dumps(to_jsonable(ledger), indent=1, sort_keys=True) + "\n")


@dataclass(frozen=True)
class DPRun:
    """What training needs to run one private round: the spend and the round's secret."""

    spend: Spend
    secret: bytes
    entry: LedgerEntry | None = None

    def report(self, plan: Plan) -> DPReport:
        dp = dp_of(plan)
        assert dp is not None and self.entry is not None
        return DPReport(
            accountant=dp.accountant,
            delta=dp.delta,
            noise_multiplier=self.spend.noise_multiplier,
            sample_rate=self.spend.sample_rate,
            steps=self.spend.steps,
            epsilon_round=self.entry.epsilon_round,
            epsilon_total=self.entry.epsilon_total,
            rounds=self.entry.rounds,
        )


def round_secret(work: Path) -> bytes:
    """This round's secret seed: made once, kept in the work folder so a resumed run matches."""
    path = work / SEED_FILE
    if path.exists():
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(secret) == 32:
            return secret
    secret = os.urandom(32)
    work.mkdir(parents=True, exist_ok=True)
    write_bytes(path, secret.hex().encode() + b"\n", mode=0o600)
    return secret


def check_against_record(ledger: Ledger, site_root: Path, delta: float) -> None:
    """Refuse a ledger that holds less than the site's own record says it spent.

    Every ``trained`` event of the hash-chained record (site_kit.record) that spent privacy
    names its package and the total epsilon after it. The ledger must still hold an entry for
    each of those packages, and its rounds composed must reach the largest total recorded: a
    deleted, truncated, edited (weaker spends) or older ledger would let the site train again
    and report a smaller cumulative epsilon. A ledger ahead of the record (a round entered and
    then killed before its bundle) is fine: it over-counts, never under-counts.
    """
    recorded = [
        (t.package_sha256, t.round, float(t.privacy_budget_spent.epsilon_total))
        for t in site_record.of_kind(site_record.events(site_root), site_record.Trained)
        if t.privacy_budget_spent is not None
    ]
    if not recorded:
        return
    held = {e.package_sha256 for e in ledger.entries}
    missing = sorted({r for sha, r, _ in recorded if sha not in held})
    most = max(total for *_, total in recorded)
    composed = epsilon([e.spend for e in ledger.entries], delta)
    if not missing and composed >= most * (1 - RECORD_SLACK) - RECORD_SLACK:
        return
    last = max(r for _, r, _ in recorded)
    rounds = len(ledger.entries)
    why = (
        f"it has no entry for round{'s' * (len(missing) > 1)} {', '.join(str(r) for r in missing)}"
        if missing
        else f"its {rounds} round{'s' * (rounds != 1)} compose to epsilon {composed:.3f}"
    )
    raise VerificationError(
        f"the privacy ledger does not match this site's record (record.jsonl): {why}, but the "
        f"record shows {len(recorded)} private round{'s' * (len(recorded) != 1)} trained, "
        f"epsilon {most:.3f} spent",
        path=ledger.path,
        code=Code.PRIVACY_LEDGER_RESET,
        hint=f"restore {LEDGER_FILE} from the backup taken after round {last} (never delete or "
        "edit it): training on a reset ledger would under-report this site's privacy loss",
    )


def prepare_round(
    site_root: Path, work: Path, plan: Plan, n: int, round_: int, package_sha256: str
) -> DPRun:
    """Refuse a round that would pass the budget or whose ledger falls short of the site's
    record (writing nothing); else enter it and go."""
    dp = dp_of(plan)
    assert dp is not None
    ledger = Ledger.open(site_root)
    check_against_record(ledger, site_root, dp.delta)
    spend = plan_spend(plan, n)
    entry = ledger.project(plan, spend, round_, package_sha256)
    if entry.epsilon_total > dp.budget:
        rounds = len(ledger.entries)
        raise PolicyError(
            f"round {round_} would bring this site's epsilon to {entry.epsilon_total:.3f}, past "
            f"the federation's budget of {dp.budget:g} (spent {ledger.spent():.3f} over "
            f"{rounds} round{'s' * (rounds != 1)}; this round alone costs {entry.epsilon_round:.3f})",
            path=ledger.path,
            code=Code.DP_BUDGET_EXCEEDED,
            hint="this site has spent its privacy budget: do not train; tell the hub, "
            "which can aggregate the other sites without it",
        )
    ledger.commit(entry, dp)
    return DPRun(spend, round_secret(work), entry)


def _seed(secret: bytes, what: str, epoch: int) -> int:
    digest = hashlib.sha256(secret + f":{what}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class PrivateTraining:
    """Opacus around a model and optimizer: Poisson batches, clipped per-sample grads, noise."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        plan: Plan,
        run: DPRun,
        n: int,
        device: torch.device,
    ) -> None:
        opacus = _opacus()
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        dp = dp_of(plan)
        assert dp is not None
        problems = ModuleValidator.validate(model, strict=False)
        if problems:
            raise UsageError(
                f"the model cannot be trained with DP-SGD: {problems[0]}",
                code=Code.DP_MODEL,
                hint="use a BatchNorm-free model (GroupNorm instead of BatchNorm); for "
                "strings, the built-in crnn (its GRU and LSTM are made of nn.Linear)",
            )
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        self.n = n
        self.device = device
        self.run = run
        self.steps_per_epoch = math.ceil(n / plan.batch_size)
        self.module = opacus.GradSampleModule(model, loss_reduction="sum")
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=run.spend.noise_multiplier,
            max_grad_norm=dp.clip,
            expected_batch_size=max(1, round(run.spend.sample_rate * n)),
            loss_reduction="mean",
        )

    def close(self) -> None:
        """Take Opacus's hooks and per-sample gradients off the model (it may train again)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.module.remove_hooks()
        self.module.to_standard_module()

    def epoch_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        """This epoch's Poisson batches (some may be empty); seeds the noise for the epoch."""
        import torch

        self.optimizer.generator = torch.Generator(device=self.device).manual_seed(
            _seed(self.run.secret, "noise", epoch)
        )
        sampler = torch.Generator().manual_seed(_seed(self.run.secret, "sample", epoch))
        q = self.run.spend.sample_rate
        for _ in range(self.steps_per_epoch):
            yield torch.nonzero(torch.rand(self.n, generator=sampler) < q).flatten()


def start_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    plan: Plan,
    run: DPRun | None,
    n: int,
    device: torch.device,
    world: int,
) -> PrivateTraining | None:
    """The private training wrapper when the plan asks for DP; None for plain training."""
    if dp_of(plan) is None:
        return None
    if run is None:
        raise UsageError(
            "the plan asks for DP-SGD but no privacy round was prepared",
            code=Code.DP_PLAN,
            hint="train through 'flsilo train' or 'flsilo simulate', which keep the ledger",
        )
    if world > 1:
        raise UsageError(
            "DP-SGD runs on one process per site; distributed (torchrun) training is not supported",
            code=Code.DP_DISTRIBUTED,
            hint="run 'flsilo train' without torchrun (one GPU or the CPU)",
        )
    return PrivateTraining(model, optimizer, plan, run, n, device)
