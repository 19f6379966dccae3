"""``video``: frames sampled from video clips with PyAV, from a folder per class or a CSV manifest.

The data is a folder holding one sub-folder per class name of clips (``.mp4``, ``.mkv``,
``.avi``, ``.mov``, ``.webm``, ``.mpg``, ``.ts``, ...: whatever FFmpeg in the PyAV wheel
demuxes and decodes), each clip wholly of its class; or a CSV manifest with columns
``file,start_s,end_s,label`` (the file relative to the CSV; the interval in seconds from
the clip's start), one labelled interval per row, several rows per clip allowed.

Samples are frames at times the plan sets (``site_kit.data.sampling``): every 1/FPS
seconds from the interval's start (``--frame-rate FPS``) or the middles of N equal parts
of the interval (``--frames-per-clip N``). A plan that sets neither cannot be read as video.
``index`` opens each clip once for its duration (no decoding) and records each sample's
time as its frame (``t=12.480``, milliseconds exact); a clip that cannot be opened, an
interval that ends before it starts or after the clip ends, and an unknown label are bad
records with the reason.

``decode`` seeks to the last keyframe at or before the sample's time and decodes forward to
the frame nearest that time (ties: the earlier), as RGB uint8 (H x W x 3); its provenance
says which clip and time it is (``cam1/clip.mp4 @ 12.480 s``).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError, UsageError
from site_kit.data import BadRecord, DataContext
from site_kit.data import manifest as csv_manifest
from site_kit.data.imagefolder import check_shape
from site_kit.data.records import FileIdentity, Identify, RawImage, Record
from site_kit.data.sampling import name, parse, rule, times_ms

KIND = "image"
CHECK_ON_INDEX = False
"""``index`` opens every clip for its duration; decoding every sample there would double the work."""

SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".wmv",
    ".flv", ".3gp", ".ogv", ".dav", ".h264", ".h265",
}  # fmt: skip
COLUMNS = ("file", "start_s", "end_s", "label")
MANIFEST_HINT = (
    "a video manifest has columns file,start_s,end_s,label (the file relative to the CSV, "
    "the interval in seconds)"
)


def require_av() -> Any:
    """The PyAV module, or a usage error saying how to install it."""
    try:
        import av
    except ImportError as exc:
        raise UsageError(
            "reading video data needs PyAV, which is not installed",
            code=Code.VIDEO_EXTRA,
        ) from exc
    return av


def _errors(av: Any) -> tuple[type[BaseException], ...]:
    return (av.FFmpegError, OSError, ValueError, IndexError, EOFError)


@dataclass(frozen=True)
class Clip:
    """What ``index`` learns from a clip: how long it lasts, and one frame's duration."""

    duration_ms: int
    frame_ms: int


def index(path: Path, ctx: DataContext, identify: Identify) -> Iterator[Record | BadRecord]:
    """Class folders in name order (clips in name order), or the manifest's rows in order."""
    ctx.refuse_task(path, "video")
    require_av()
    check_shape(path, ctx.input_shape, "video frames")
    frame_rate, per_clip = rule(ctx.preprocess)
    if frame_rate <= 0 and per_clip <= 0:
        raise DataError(
            "the federation's plan sets no frame sampling for video",
            path=path,
            code=Code.VIDEO_SAMPLING,
        )
    seen: dict[Path, tuple[FileIdentity, Clip] | BadRecord] = {}
    csv_manifest.check_source(path, "video", MANIFEST_HINT)
    rows = _folder(path, ctx) if path.is_dir() else _manifest(path, ctx)
    for item in rows:
        if isinstance(item, BadRecord):
            yield item
            continue
        where, file, target, interval = item
        if file not in seen:
            seen[file] = _open(file, identify)
        known = seen[file]
        if isinstance(known, BadRecord):
            named = "" if where == str(file) else f"{file.relative_to(ctx.root).as_posix()}: "
            yield BadRecord(where, named + known.why)
            continue
        identity, clip = known
        start_ms, end_ms = interval if interval else (0, clip.duration_ms)
        if end_ms > clip.duration_ms + clip.frame_ms + 1:
            yield BadRecord(
                where,
                f"the interval ends at {end_ms / 1000:g} s, after the clip "
                f"({clip.duration_ms / 1000:g} s long)",
            )
            continue
        for t in times_ms(start_ms, end_ms, frame_rate, per_clip):
            yield identity.record(target, name(t))


def _open(file: Path, identify: Identify) -> tuple[FileIdentity, Clip] | BadRecord:
    try:
        identity = identify(file)
    except OSError as exc:
        return BadRecord(str(file), f"cannot read file ({exc.strerror})")
    try:
        return identity, probe(file)
    except BadRecord as exc:
        return exc


Row = tuple[str, Path, int, tuple[int, int] | None]


def _folder(path: Path, ctx: DataContext) -> Iterator[Row | BadRecord]:
    classes = ctx.class_index
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in classes:
            yield BadRecord(
                str(folder),
                f"folder {folder.name!r} is not a class of this federation "
                f"({', '.join(ctx.classes)})",
            )
            continue
        for file in sorted(folder.iterdir()):
            if file.is_file() and not file.name.startswith(".") and file.suffix.lower() in SUFFIXES:
                yield str(file), file, classes[folder.name], None


def _manifest(path: Path, ctx: DataContext) -> Iterator[Row | BadRecord]:
    classes = ctx.class_index
    for where, row in csv_manifest.rows(path, COLUMNS, MANIFEST_HINT):
        if not row:
            yield BadRecord(where, "the row has another number of cells than the header")
            continue
        if row["label"] not in classes:
            yield BadRecord(
                where,
                f"label {row['label']!r} is not a class of this federation "
                f"({', '.join(ctx.classes)})",
            )
            continue
        interval = _interval(row["start_s"], row["end_s"])
        if isinstance(interval, str):
            yield BadRecord(where, interval)
            continue
        file = csv_manifest.resolve(ctx.root, row["file"], where)
        yield (
            file if isinstance(file, BadRecord) else (where, file, classes[row["label"]], interval)
        )


def _interval(start_text: str, end_text: str) -> tuple[int, int] | str:
    """(start_ms, end_ms), or why the cells are not an interval."""
    values = []
    for column, text in (("start_s", start_text), ("end_s", end_text)):
        try:
            value = float(text)
        except ValueError:
            return f"{column} {text!r} is not a number of seconds"
        if not math.isfinite(value) or value < 0:
            return f"{column} {text!r} is not a time in the clip (seconds from its start)"
        values.append(round(value * 1000))
    start_ms, end_ms = values
    if end_ms <= start_ms:
        return f"the interval ends ({end_text} s) before it starts ({start_text} s)"
    return start_ms, end_ms


def probe(file: Path) -> Clip:
    """The clip's duration from its headers (or, where they lack it, its packets)."""
    av = require_av()
    try:
        with av.open(str(file)) as container:
            if not container.streams.video:
                raise BadRecord(str(file), "the file holds no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 25
            frame_ms = max(round(1000 / float(rate)), 1)
            duration = _duration(container, stream)
    except _errors(av) as exc:
        raise BadRecord(str(file), f"cannot open the clip ({_brief(exc)})") from exc
    if duration <= 0:
        raise BadRecord(str(file), "the clip holds no frames")
    return Clip(duration_ms=math.floor(duration * 1000), frame_ms=frame_ms)


def _duration(container: Any, stream: Any) -> Fraction:
    if stream.duration and stream.time_base:
        return Fraction(stream.duration) * stream.time_base
    if container.duration:
        return Fraction(container.duration, 1_000_000)
    start = stream.start_time or 0
    end = 0
    for packet in container.demux(stream):  # no duration in the headers: read the packets
        if packet.pts is not None:
            end = max(end, packet.pts + (packet.duration or 0))
    return Fraction(max(end - start, 0)) * stream.time_base if stream.time_base else Fraction(0)


def decode(record: Record, ctx: DataContext) -> RawImage:
    """The frame nearest the record's time, as RGB uint8 (see the module's docstring)."""
    av = require_av()
    file = ctx.root / record.source
    where = f"{file} @ {record.frame}"
    try:
        t_ms = parse(record.frame)
    except ValueError as exc:
        raise BadRecord(where, str(exc)) from exc
    try:
        container = _open_clip(av, file)
        if not container.streams.video:
            raise BadRecord(where, "the file holds no video stream")
        frame = _frame_at(container, container.streams.video[0], t_ms)
        pixels = frame.to_ndarray(format="rgb24") if frame is not None else None
    except _errors(av) as exc:
        _forget(file)
        raise BadRecord(where, f"cannot decode the clip ({_brief(exc)})") from exc
    if pixels is None:
        raise BadRecord(where, "no frame at or near this time (the clip is shorter?)")
    seconds = name(t_ms)[2:]
    return RawImage(pixels, provenance=f"{record.source} @ {seconds} s")


_OPEN: OrderedDict[tuple[str, int, int, int], Any] = OrderedDict()
"""Clips this process has open, most recently used last: opening one probes its streams
(tens of milliseconds), more than seeking in it and decoding a few frames."""
_OPEN_PID: list[int] = []
KEEP_OPEN = 4


def _open_clip(av: Any, file: Path) -> Any:
    """``file`` opened for decoding, reused while its size, mtime and inode stay the same.

    A DataLoader worker forked from a process with clips open opens its own: a descriptor
    shared across processes would share its file offset.
    """
    if _OPEN_PID != [os.getpid()]:
        _OPEN.clear()  # the parent's, if any: dropped, never used from this process
        _OPEN_PID[:] = [os.getpid()]
    st = os.stat(file)
    key = (str(file), st.st_size, st.st_mtime_ns, st.st_ino)
    container = _OPEN.pop(key, None)
    if container is None:
        _forget(file)
        container = av.open(str(file))
        for stream in container.streams.video[:1]:
            stream.codec_context.thread_count = 1  # DataLoader workers share the cores
    _OPEN[key] = container
    while len(_OPEN) > KEEP_OPEN:
        _OPEN.popitem(last=False)[1].close()
    return container


def _forget(file: Path) -> None:
    """Close every open copy of ``file`` (it changed, or failed to decode)."""
    for key in [k for k in _OPEN if k[0] == str(file)]:
        _OPEN.pop(key).close()


def _frame_at(container: Any, stream: Any, t_ms: int) -> Any:
    """Seek to the keyframe at or before ``t_ms``, decode forward, return the nearest frame."""
    base = stream.time_base
    first = stream.start_time or 0
    target = first + Fraction(t_ms, 1000) / base
    container.seek(math.floor(target), stream=stream, backward=True, any_frame=False)
    chosen = _nearest(container.decode(stream), target)
    if chosen is not None and chosen[1] and target > first:
        # the seek landed after the time (a container without an index): start over
        container.seek(first, stream=stream, backward=True, any_frame=False)
        chosen = _nearest(container.decode(stream), target)
    return chosen[0] if chosen is not None else None


def _nearest(frames: Iterator[Any], target: Fraction) -> tuple[Any, bool] | None:
    """``(frame, overshot)``: the decoded frame nearest ``target`` (pts units); ``overshot``
    when the first frame decoded was already past it."""
    before = None
    for frame in frames:
        if frame.pts is None:
            continue
        if frame.pts <= target:
            before = frame
            continue
        if before is None:
            return frame, True
        return (before if target - before.pts <= frame.pts - target else frame), False
    return (before, False) if before is not None else None


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
