"""Which frames of a clip (a video interval, a multi-frame DICOM file) become samples.

The plan sets one of two rules (``[plan.preprocess]``): ``frame_rate`` FPS takes a frame
every 1/FPS seconds from the start of the interval, while it lasts; ``frames_per_clip`` N
takes the middle of each of N equal parts of the interval. Times are whole milliseconds,
so a sample's name (``t=12.480``) is exact and the same on every machine.
"""

from __future__ import annotations

from typing import Any


class NoSamplingRule(ValueError):
    """The plan sets neither a frame rate nor a number of frames per clip."""


def rule(preprocess: Any) -> tuple[float, int]:
    """``(frame_rate, frames_per_clip)`` from the plan's preprocessing (0 where unset)."""
    rate = float(getattr(preprocess, "frame_rate", 0.0) or 0.0)
    per_clip = int(getattr(preprocess, "frames_per_clip", 0) or 0)
    return rate, per_clip


def times_ms(start_ms: int, end_ms: int, frame_rate: float, frames_per_clip: int) -> list[int]:
    """Sample times in [start_ms, end_ms), in order and distinct; raises NoSamplingRule."""
    if end_ms <= start_ms:
        return []
    if frame_rate > 0:
        out: list[int] = []
        k = 0
        while (t := start_ms + round(k * 1000 / frame_rate)) < end_ms:
            out.append(t)
            k += 1
        return out
    if frames_per_clip > 0:
        return spread(start_ms, end_ms, frames_per_clip)
    raise NoSamplingRule("the plan sets neither --frame-rate nor --frames-per-clip")


def spread(start: int, end: int, n: int) -> list[int]:
    """The middles of ``n`` equal parts of [start, end), rounded down, without repeats."""
    span = end - start
    out: list[int] = []
    for k in range(n):
        t = start + (2 * k + 1) * span // (2 * n)
        if not out or t != out[-1]:
            out.append(t)
    return out


def name(t_ms: int) -> str:
    """A sample time as the index records it: ``t=12.480`` (seconds, three decimals)."""
    return f"t={t_ms // 1000}.{t_ms % 1000:03d}"


def parse(frame: str) -> int:
    """``t=12.480`` as 12480 (milliseconds); ValueError for anything else."""
    if not frame.startswith("t="):
        raise ValueError(f"not a sample time: {frame!r}")
    whole, dot, part = frame[2:].partition(".")
    if not whole.isdigit() or (dot and (len(part) != 3 or not part.isdigit())):
        raise ValueError(f"not a sample time: {frame!r}")
    return int(whole) * 1000 + (int(part) if dot else 0)
