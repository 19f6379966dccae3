"""Schedules (one-shot, few-shot:R, periodic:R) and the plan each round's package carries."""

from __future__ import annotations

from flsilo.errors import UsageError
from flsilo.federation import FederationConfig
from flsilo.manifest import Plan, Schedule

KINDS = ("one-shot", "few-shot", "periodic")


def parse_schedule(text: str, local_epochs: tuple[int, ...]) -> Schedule:
    """``one-shot`` is one round; ``few-shot:R`` and ``periodic:R`` are R rounds.

    ``local_epochs`` is one E for every round, or one per round (a decaying E, say).
    """
    kind, _, count = text.partition(":")
    if kind not in KINDS or (kind == "one-shot") != (count == ""):
        raise UsageError(
            f"schedule {text!r} is not one-shot, few-shot:R or periodic:R",
            code="bad-schedule",
            hint="e.g. --schedule periodic:10 --local-epochs 5",
        )
    try:
        rounds = 1 if kind == "one-shot" else int(count)
    except ValueError as exc:
        raise UsageError(
            f"schedule {text!r}: R must be a whole number", code="bad-schedule"
        ) from exc
    if rounds < 1:
        raise UsageError("a schedule needs at least one round", code="bad-schedule")
    if not local_epochs or any(e < 1 for e in local_epochs):
        raise UsageError("local epochs must be at least 1", code="bad-schedule")
    if len(local_epochs) == 1:
        local_epochs = local_epochs * rounds
    if len(local_epochs) != rounds:
        raise UsageError(
            f"{len(local_epochs)} local-epoch values for {rounds} rounds",
            code="bad-schedule",
            hint="give one value, or exactly one per round",
        )
    return Schedule(kind=kind, rounds=rounds, local_epochs=tuple(local_epochs))


def plan_for_round(config: FederationConfig, schedule: Schedule, round_: int) -> Plan | None:
    """The plan sites follow on the package of ``round_``; None for the final package."""
    if round_ >= schedule.rounds:
        return None
    return Plan(
        local_epochs=schedule.local_epochs[round_],
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        seed=config.seed + round_,
        fedprox_mu=config.fedprox_mu,
        val_fraction=config.val_fraction,
    )
