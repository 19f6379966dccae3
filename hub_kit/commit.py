"""How a round becomes real: stage every output, append the log (the commit), then publish.

Commit order of aggregate round r, each step a fault point (``FLSILO_FAULT=aggregate:STEP``):

1. ``staged``: ``rounds/NNNN.staging/archive/`` holds the accepted bundles and the exact
   ``.sig`` bytes that verified (other round records, e.g. a ``SHA256SUMS``, go here too).
2. ``built``: ``rounds/NNNN.staging/publish/`` holds every file the round adds to the
   workspace at its final relative path: ``packages/FED-rNNNN.safetensors`` and its ``.sig``
   (and any later per-round output, e.g. a server-optimizer state file, whose sha256 goes
   into the package and the log). Nothing outside the staging folder has changed yet.
3. ``commit``: the round's accept/reject/aggregate events are appended to ``events.jsonl`` in
   one atomic replace. The package's digests (and a log-head anchor) are in those events.
4. ``publish``: each file under ``publish/`` is renamed to its place (signatures and
   state first, the package last, so a visible package always has its ``.sig``), then ``archive/`` becomes ``rounds/NNNN``
   and the staging folder is removed.

A crash before 3 leaves no visible package and a log that does not know the round: the next
``aggregate`` deletes the staging folder and redoes the round from the untouched inbox. A
command that fails before 3 (a full disk, a wrong passphrase) deletes it itself, as it lets go
of the lock (:func:`discard_uncommitted`), so it leaves nothing behind. A
crash after 3 leaves a committed round whose files are still staged: the next hub command
that takes the workspace lock finishes step 4 before anything else (:func:`roll_forward`).
So at any moment a package under ``packages/`` is either absent or the committed one.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flsilo.fs.atomic import fsync_dir
from flsilo.runtime import signals
from flsilo.runtime.errors import FlsiloError
from flsilo.runtime.signals import Interrupted

STAGING_SUFFIX = ".staging"
_STAGING = re.compile(r"^(\d{4,})\.staging$")


@dataclass(frozen=True)
class StagedRound:
    """The private folder where one round's outputs wait for the commit."""

    root: Path
    round: int

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def publish(self) -> Path:
        return self.root / "publish"

    def output(self, relative: str) -> Path:
        """Where to stage an output that will be published at ``HUB/relative``."""
        staged = self.publish / relative
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged


def staging_for(rounds_dir: Path, round_: int) -> StagedRound:
    return StagedRound(rounds_dir / f"{round_:04d}{STAGING_SUFFIX}", round_)


def fresh_staging(rounds_dir: Path, round_: int) -> StagedRound:
    """An empty staging folder for an uncommitted round (a crashed attempt's is discarded)."""
    staged = staging_for(rounds_dir, round_)
    shutil.rmtree(staged.root, ignore_errors=True)
    staged.archive.mkdir(parents=True)
    staged.publish.mkdir()
    return staged


def publish(staged: StagedRound, hub_root: Path, archive_dest: Path) -> None:
    """Step 4, idempotent: move staged outputs into place, then the archive, then clean up."""
    if staged.publish.is_dir():
        files = sorted(
            (p for p in staged.publish.rglob("*") if p.is_file()),
            key=lambda p: (p.name.endswith(".safetensors"), str(p)),  # the package last
        )
        for src in files:
            dest = hub_root / src.relative_to(staged.publish)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
            fsync_dir(dest.parent)
    if staged.archive.is_dir():
        if archive_dest.exists():
            shutil.rmtree(archive_dest)  # a leftover no log event refers to
        staged.archive.rename(archive_dest)
        fsync_dir(archive_dest.parent)
    shutil.rmtree(staged.root, ignore_errors=True)


@dataclass(frozen=True)
class Finished:
    """A round an interrupted ``aggregate`` committed, whose files a rerun published: the
    round is done, so the rerun stops there instead of starting the next round."""

    round: int
    package: Path

    def line(self) -> str:
        return (
            f"round {self.round} was committed by an interrupted aggregate; its files are now "
            f"published and it was not redone (the next package: {self.package.name})"
        )

    def to_dict(self) -> dict[str, object]:
        return {"finished_round": self.round, "package": str(self.package)}


def staged_rounds(rounds_dir: Path) -> list[StagedRound]:
    if not rounds_dir.is_dir():
        return []
    found = []
    for entry in sorted(rounds_dir.iterdir()):
        match = _STAGING.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found.append(StagedRound(entry, int(match.group(1))))
    return found


def roll_forward(hub_root: Path, rounds_dir: Path, committed_rounds: int) -> list[int]:
    """Finish step 4 for every round the log has committed; return the rounds finished."""
    done = []
    for staged in staged_rounds(rounds_dir):
        if staged.round < committed_rounds:
            publish(staged, hub_root, rounds_dir / f"{staged.round:04d}")
            done.append(staged.round)
    return done


def discard_uncommitted(rounds_dir: Path, committed_rounds: Callable[[], int]) -> None:
    """After a command failed under the lock (a full disk, a wrong passphrase): remove the
    staging folders of rounds the log has not committed, so nothing of the attempt stays.

    ``committed_rounds`` reads the log as it is now (a failure after the append committed).
    """
    leftovers = staged_rounds(rounds_dir)
    if not leftovers:
        return
    try:
        committed = committed_rounds()
    except FlsiloError:
        return  # a log that cannot be read: leave everything for the next command to judge
    for staged in leftovers:
        if staged.round >= committed:
            shutil.rmtree(staged.root, ignore_errors=True)


def interrupted_after_commit(
    exc: BaseException, rounds_dir: Path, started: int, committed: int
) -> Interrupted | None:
    """The interrupt to report when a command was stopped after it committed a round.

    ``started`` is the log's round count when the command took the lock, ``committed`` its
    count now: a round committed in between is said as committed (and, while its staging
    folder remains, as published by the next hub command), never as "nothing half-written
    was kept" — rerunning would not redo it. None when nothing was committed.
    """
    if committed <= started:
        return None
    last = committed - 1
    one = committed - started == 1
    rounds = f"round {last} was" if one else f"rounds {started}-{last} were"
    if any(s.round < committed for s in staged_rounds(rounds_dir)):
        return signals.after_done(
            exc,
            f"{rounds} committed to the event log; its package and archive are not "
            "all in place yet",
            "rerun 'flsilo aggregate' (or any hub command that changes the workspace) to "
            "publish them; the round is not redone",
        )
    return signals.after_done(
        exc,
        f"{rounds} committed and published",
        "nothing to redo: 'flsilo hub status' shows the next round",
    )


def round_entry_note(path: Path, committed: int) -> list[str]:
    """What ``rounds/NAME`` is, when the log does not account for it (status and audit)."""
    name = path.name
    number = name.removesuffix(STAGING_SUFFIX)
    if not number.isdigit() or path.is_symlink() or not path.is_dir():
        return [f"rounds/{name}: not a round folder"]
    if name.endswith(STAGING_SUFFIX):
        if int(number) < committed:
            return [
                f"rounds/{name}: round committed in the log but not yet published "
                "(the next hub command finishes it)"
            ]
        return [
            f"rounds/{name}: an interrupted, uncommitted attempt (the next aggregate discards it)"
        ]
    if int(number) >= committed:
        return [f"rounds/{name}: a round archive the event log does not know"]
    return []
