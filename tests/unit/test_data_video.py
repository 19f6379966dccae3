"""site_kit.data.video: clips encoded with PyAV, sampled by the plan, decoded by timestamp."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from flsilo.runtime.errors import DataError
from site_kit.data import BadRecord, DataContext
from site_kit.data.records import FileIdentity, Record
from site_kit.data.sampling import name, parse, spread, times_ms
from tests.media import av_or_skip, frame_number, write_clip

CLASSES = ("empty", "vehicle")


def context(root: Path, frames_per_clip: int = 0, frame_rate: float = 0.0) -> DataContext:
    plan = SimpleNamespace(frames_per_clip=frames_per_clip, frame_rate=frame_rate)
    return DataContext(root, CLASSES, (3, 16, 16), preprocess=plan)


def identify_under(root: Path):
    def identify(file: Path) -> FileIdentity:
        st = file.stat()
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        return FileIdentity(file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns, digest)

    return identify


def walk(path: Path, ctx: DataContext) -> tuple[list[Record], list[BadRecord]]:
    from site_kit.data import video

    good: list[Record] = []
    bad: list[BadRecord] = []
    for item in video.index(path, ctx, identify_under(ctx.root)):
        (bad if isinstance(item, BadRecord) else good).append(item)
    return good, bad


def nearest(t_ms: int, fps: int = 25) -> int:
    """The frame shown nearest ``t_ms`` (a tie goes to the earlier frame)."""
    return math.ceil(t_ms * fps / 1000 - 0.5)


def test_sample_times_are_whole_milliseconds() -> None:
    assert times_ms(1000, 2000, 4, 0) == [1000, 1250, 1500, 1750]
    assert times_ms(0, 100, 30, 0) == [0, 33, 67]
    assert times_ms(0, 4000, 0, 4) == [500, 1500, 2500, 3500]
    assert spread(0, 3, 5) == [0, 1, 2]  # never the same frame twice
    assert name(12480) == "t=12.480" and parse("t=12.480") == 12480
    assert name(7) == "t=0.007" and parse(name(7)) == 7
    for text in ("t=1.5", "frame=3", "t=-1.000", "t=1.0000"):
        with pytest.raises(ValueError):
            parse(text)


def test_folder_of_clips_sampled_per_clip_decodes_the_frame_at_each_time(tmp_path: Path) -> None:
    av_or_skip()
    from site_kit.data import video

    write_clip(tmp_path / "vehicle" / "cam1.mp4", 100, gop=12)  # 4 s at 25 fps
    write_clip(tmp_path / "empty" / "cam2.mkv", 50, first=100)  # 2 s
    (tmp_path / "empty" / "readme.txt").write_text("not a clip")
    ctx = context(tmp_path, frames_per_clip=4)
    good, bad = walk(tmp_path, ctx)
    assert bad == []
    assert [(r.source, r.target, r.frame) for r in good] == [
        ("empty/cam2.mkv", 0, "t=0.250"),
        ("empty/cam2.mkv", 0, "t=0.750"),
        ("empty/cam2.mkv", 0, "t=1.250"),
        ("empty/cam2.mkv", 0, "t=1.750"),
        ("vehicle/cam1.mp4", 1, "t=0.500"),
        ("vehicle/cam1.mp4", 1, "t=1.500"),
        ("vehicle/cam1.mp4", 1, "t=2.500"),
        ("vehicle/cam1.mp4", 1, "t=3.500"),
    ]
    for record in good:
        image = video.decode(record, ctx)
        assert image.pixels.shape == (48, 64, 3)
        assert str(image.pixels.dtype) == "uint8"
        first = 100 if record.source.endswith("mkv") else 0
        assert frame_number(image.pixels) == first + nearest(parse(record.frame))
        assert image.provenance == f"{record.source} @ {record.frame[2:]} s"


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])  # libx264: B-frames, reordered
def test_frame_rate_sampling_matches_timestamps_across_keyframes(
    tmp_path: Path, codec: str
) -> None:
    av = av_or_skip()
    from site_kit.data import video

    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    write_clip(tmp_path / "vehicle" / "cam.mp4", 75, gop=10, codec=codec)  # 3 s at 25 fps
    ctx = context(tmp_path, frame_rate=7)  # not a divisor of 25: times between frames
    good, bad = walk(tmp_path, ctx)
    assert bad == []
    assert len(good) == 21  # 0 .. 2.857 s
    for record in reversed(good):  # backwards: every decode seeks
        assert frame_number(video.decode(record, ctx).pixels) == nearest(parse(record.frame))


def test_manifest_intervals_and_every_bad_row(tmp_path: Path) -> None:
    av_or_skip()
    write_clip(tmp_path / "clips" / "gate.mp4", 100)  # 4 s
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    manifest = tmp_path / "intervals.csv"
    manifest.write_text(
        "file,start_s,end_s,label\n"
        "clips/gate.mp4,0.5,1.5,vehicle\n"
        "clips/gate.mp4,2,4,empty\n"
        "clips/gate.mp4,3,9,empty\n"
        "clips/gate.mp4,2,1,empty\n"
        "clips/gate.mp4,1,2,bicycle\n"
        "clips/broken.mp4,0,1,empty\n"
        "clips/absent.mp4,0,1,empty\n"
        "clips/gate.mp4,x,1,empty\n"
    )
    ctx = context(tmp_path, frame_rate=2)
    good, bad = walk(manifest, ctx)
    assert [(r.frame, r.target) for r in good] == [
        ("t=0.500", 1),
        ("t=1.000", 1),
        ("t=2.000", 0),
        ("t=2.500", 0),
        ("t=3.000", 0),
        ("t=3.500", 0),
    ]
    why = {b.where.rsplit(":", 1)[1]: b.why for b in bad}
    assert sorted(why) == ["4", "5", "6", "7", "8", "9"]
    assert why["4"] == "the interval ends at 9 s, after the clip (4 s long)"
    assert why["5"] == "the interval ends (1 s) before it starts (2 s)"
    assert "'bicycle' is not a class" in why["6"]
    assert why["7"].startswith("clips/broken.mp4: cannot open the clip (")
    assert "does not exist" in why["8"]
    assert "start_s 'x' is not a number" in why["9"]


def test_a_plan_without_frame_sampling_cannot_read_video(tmp_path: Path) -> None:
    av_or_skip()
    write_clip(tmp_path / "vehicle" / "cam.mp4", 10)
    with pytest.raises(DataError) as caught:
        walk(tmp_path, context(tmp_path))
    assert caught.value.code == "video-sampling"
    with pytest.raises(DataError) as caught:  # one clip is not a data set
        walk(tmp_path / "vehicle" / "cam.mp4", context(tmp_path, frame_rate=1))
    assert caught.value.code == "data-format"


def test_a_clip_cut_after_indexing_is_a_bad_record_at_decode(tmp_path: Path) -> None:
    av_or_skip()
    from site_kit.data import video

    clip = write_clip(tmp_path / "vehicle" / "cam.mp4", 100)
    ctx = context(tmp_path, frames_per_clip=2)
    good, _ = walk(tmp_path, ctx)
    clip.write_bytes(b"garbage")
    with pytest.raises(BadRecord) as caught:
        video.decode(good[-1], ctx)
    assert caught.value.where == f"{clip} @ t=3.000"
    assert caught.value.why.startswith("cannot decode the clip (")


def test_without_pyav_a_usage_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flsilo.runtime.errors import UsageError

    monkeypatch.setitem(__import__("sys").modules, "av", None)  # import fails
    with pytest.raises(UsageError) as caught:
        walk(tmp_path, context(tmp_path, frame_rate=1))
    assert caught.value.code == "video-extra"
    assert "flsilo[video]" in caught.value.hint
