"""Progress reporting: counted as the work reads, shown only where a display is installed,
redrawn at a bounded rate however many chunks go by."""

from __future__ import annotations

import threading

import pytest

from flsilo.cli.progress import PlainDisplay, duration_text, size_text, summary
from flsilo.runtime import progress
from flsilo.runtime.progress import counted


class Collected:
    """A display that keeps what it is shown (what a terminal would have drawn)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.seen: list[progress.Snapshot] = []

    def show(self, snapshot: progress.Snapshot) -> None:
        self.seen.append(snapshot)


def test_nothing_is_counted_or_shown_without_a_display() -> None:
    with progress.stage("verifying", total_bytes=100, unit="files", units=1):
        with progress.unit(100):
            progress.advance(100)
    shown = Collected(0.0)
    with progress.showing(shown):
        pass
    assert shown.seen == []


def test_units_and_bytes_add_up_and_unread_bytes_count_when_a_unit_ends() -> None:
    shown = Collected(0.0)
    with (
        progress.showing(shown),
        progress.stage("verifying", total_bytes=300, unit="bundles", units=3),
    ):
        with progress.unit(100):
            progress.advance(100)
        with progress.unit(100):  # refused after 40 bytes: the rest is not read
            progress.advance(40)
        with progress.unit(100):
            pass  # refused by its size, never read
    first, last = shown.seen[0], shown.seen[-1]
    assert (first.units_done, first.bytes_done, first.finished) == (0, 0, False)
    assert (last.units_done, last.units, last.bytes_done, last.finished) == (3, 3, 300, True)
    assert [s.units_done for s in shown.seen] == sorted(s.units_done for s in shown.seen)


def test_a_nested_stage_reports_to_itself_and_the_outer_one_resumes() -> None:
    shown = Collected(0.0)
    with progress.showing(shown), progress.stage("checking", total_bytes=10):
        progress.advance(4)
        with progress.stage("combining 2 bundles", total_bytes=50):
            progress.advance(50)
        progress.advance(6)
    inner = [s for s in shown.seen if s.label.startswith("combining")]
    outer = [s for s in shown.seen if s.label == "checking"]
    assert inner[-1].finished and inner[-1].bytes_done == 50 and inner[-1].depth == 1
    assert outer[-1].finished and outer[-1].bytes_done == 10 and outer[-1].depth == 0


def test_expect_sets_the_size_once_the_work_knows_it() -> None:
    shown = Collected(0.0)
    with progress.showing(shown), progress.stage("checking", total_bytes=0, unit="files"):
        with progress.unit(5):  # before the size is known: not part of the count
            progress.advance(5)
        progress.expect(units=2, total_bytes=20)
        for _ in range(2):
            with progress.unit(10):
                progress.advance(10)
    assert (shown.seen[-1].units_done, shown.seen[-1].bytes_done) == (2, 20)


def test_redraws_are_bounded_whatever_the_number_of_chunks() -> None:
    shown = Collected(3600.0)  # at most one redraw an hour
    with progress.showing(shown), progress.stage("combining", total_bytes=1 << 40):

        def reader() -> None:
            for _ in range(5000):
                progress.advance(1 << 20)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(shown.seen) <= 3  # the start, perhaps one redraw, the end
    assert shown.seen[-1].bytes_done == 4 * 5000 << 20


def test_rate_and_time_left() -> None:
    snap = progress.Snapshot("verifying", "bundles", 1, 4, 100 << 20, 400 << 20, 2.0)
    assert snap.rate == 50 << 20
    assert snap.left == pytest.approx(6.0)
    assert progress.Snapshot("v", "", 0, 0, 0, 10, 0.0).left is None


def test_plain_lines_are_occasional_and_a_stage_that_showed_ends_with_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = PlainDisplay("aggregate", after=0.0)
    with (
        progress.showing(plain),
        progress.stage("verifying", total_bytes=2 << 20, unit="bundles", units=2),
    ):
        for _ in range(2):
            with progress.unit(1 << 20):
                for _ in range(64):
                    progress.advance(16 << 10)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("aggregate: verifying 0/2 bundles, 0 B of 2.0 MiB")
    assert lines[-1].startswith("aggregate: verifying done: 2 bundles, 2.0 MiB in ")
    assert len(lines) == 2  # within ten seconds: the first line and the summary only


def test_quick_work_prints_nothing_in_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    plain = PlainDisplay("verify", after=60.0)
    with progress.showing(plain), progress.stage("verifying", total_bytes=10):
        progress.advance(10)
    assert capsys.readouterr().err == ""


def test_sizes_durations_and_the_summary_read_as_people_write_them() -> None:
    assert [size_text(n) for n in (0, 1023, 1536, 774 << 20, 2 << 30)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "774 MiB",
        "2.0 GiB",
    ]
    assert [duration_text(s) for s in (4.4, 125, 3720)] == ["4 s", "2 min 05 s", "1 h 02 min"]
    assert [counted(1, "bundles"), counted(2, "bundles")] == ["1 bundle", "2 bundles"]
    one = progress.Snapshot("verifying", "files", 1, 1, 1 << 30, 1 << 30, 2.0, finished=True)
    assert summary("verify", one) == "verify: verifying done: 1 file, 1.0 GiB in 2 s (512 MiB/s)"
