"""What an interrupt says when it comes after a hub command committed rounds."""

from __future__ import annotations

import signal
from pathlib import Path

from flsilo.runtime import signals
from hub_kit.commit import interrupted_after_commit, staging_for


def test_nothing_committed_leaves_the_plain_interrupt(tmp_path: Path) -> None:
    assert interrupted_after_commit(KeyboardInterrupt(), tmp_path, 2, 2) is None


def test_a_committed_round_still_staged_is_said_to_wait_for_publishing(tmp_path: Path) -> None:
    staging_for(tmp_path, 2).publish.mkdir(parents=True)
    after = interrupted_after_commit(signals.Interrupted(int(signal.SIGTERM)), tmp_path, 2, 3)
    assert after is not None and signals.exit_status(after) == 143  # the signal is kept
    assert after.done.startswith("round 2 was committed to the event log;")
    assert "rerun 'flsilo aggregate'" in after.hint


def test_rounds_committed_and_published_are_said_done(tmp_path: Path) -> None:
    after = interrupted_after_commit(KeyboardInterrupt(), tmp_path, 1, 3)
    assert after is not None and signals.exit_status(after) == 130
    assert after.done == "rounds 1-2 were committed and published"
