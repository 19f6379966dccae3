"""iso_to_epoch reads a time as strptime reads it, and refuses what strptime refuses."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from flsilo.format.manifest import epoch_to_iso, iso_to_epoch


def reference(text: object) -> tuple[str, object]:
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        return (type(exc).__name__, str(exc))
    return ("read", int(moment.replace(tzinfo=UTC).timestamp()))


def outcome(text: object) -> tuple[str, object]:
    try:
        return ("read", iso_to_epoch(text))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        return (type(exc).__name__, str(exc))


ODD = [
    "2026-02-29T00:00:00Z",
    "2024-02-29T23:59:59Z",
    "2026-13-01T00:00:00Z",
    "2026-00-10T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T23:60:00Z",
    "2026-01-01T23:59:60Z",
    "2026-01-01T23:59:61Z",
    "2026-1-01T00:00:00Z",
    "2026-01-01T00:00:00",
    "2026-01-01 00:00:00Z",
    "2026-01-01T00:00:00Z ",
    "\uff12026-01-01T00:00:00Z",
    "",
    None,
    12,
    b"2026-01-01T00:00:00Z",
]


@pytest.mark.parametrize("text", ODD)
def test_odd_times_are_read_or_refused_as_strptime_does(text: object) -> None:
    assert outcome(text) == reference(text)


def test_random_times_are_read_as_strptime_reads_them() -> None:
    rng = random.Random(5)
    for _ in range(400):
        fields = [rng.randint(0, 3000), rng.randint(0, 13), rng.randint(0, 32)]
        fields += [rng.randint(0, 25), rng.randint(0, 61), rng.randint(0, 62)]
        text = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format(*fields)
        assert outcome(text) == reference(text), text
    assert iso_to_epoch(epoch_to_iso(1_790_000_000)) == 1_790_000_000
