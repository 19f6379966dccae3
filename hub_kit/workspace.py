"""The hub workspace: paths, configuration, and the transaction that reads and appends the log.

Layout::

    HUB_DIR/federation.toml   what hub and sites agree on (copied into every kit)
    HUB_DIR/hub.toml          hub-only settings: where the hub's private key lives
    HUB_DIR/hub.pub           the hub's public key
    HUB_DIR/allowed_signers   OpenSSH trust file, regenerated from enrolment events
    HUB_DIR/events.jsonl      hash-chained event log: the source of truth
    HUB_DIR/packages/         every signed package, round 0 to now
    HUB_DIR/rounds/NNNN/      bundles accepted into round NNNN, byte for byte as verified
    HUB_DIR/inbox/            where carried bundles are dropped (never modified by flsilo)
    HUB_DIR/quarantine/rNNNN/ copies of rejected files with a .reason.txt each
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from flsilo.fs.atomic import WorkspaceLock, write_text
from flsilo.fs.folders import require_folder
from flsilo.fs.workspace_paths import resolve_stored, stored_path
from flsilo.plans import federation as fed
from flsilo.plans.federation import read_toml
from flsilo.plans.plan import Schedule
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import (
    FlsiloError,
    MalformedInputError,
    UsageError,
    VerificationError,
    WorkspaceError,
)
from flsilo.runtime.signals import Interrupted
from flsilo.signing.keys import PrivateKey, parse_public_line, public_of
from flsilo.signing.trust import AllowedSigners
from hub_kit.anchor import Pending, check_log_signature, finish_pending, write_signed_log
from hub_kit.commit import (
    discard_uncommitted,
    interrupted_after_commit,
    roll_forward,
    round_entry_note,
)
from hub_kit.eventlog import EventLog
from hub_kit.events import HubEvent, Init, Logged, RotateKey
from hub_kit.state import HubState, fold, render_allowed_signers, signer_entries

HUB_FILE = "hub.toml"
UNLOCKED_READ_TRIES = 5
UNLOCKED_READ_PAUSE_S = 0.25
LOCK_WAIT_ENV = "FLSILO_LOCK_WAIT"
DEFAULT_LOCK_WAIT_S = 10.0


class HubWorkspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = fed.load(root / fed.FEDERATION_FILE)
        self.log = EventLog(root / "events.jsonl")
        self._key_path: Path | None = None
        self.pending: Pending | None = None  # the log was accepted on this journal's signature

    @property
    def key_path(self) -> Path:
        """The hub's private key: as overridden for this command, else from the hub-only
        settings file (read only when a signature is made, so audit needs no hub.toml)."""
        if self._key_path is None:
            hub = read_toml(self.root / HUB_FILE, "hub workspace (made by 'flsilo hub init')")
            self._key_path = resolve_stored(str(hub.get("key", "")), self.root)
        return self._key_path

    @key_path.setter
    def key_path(self, value: Path) -> None:
        self._key_path = value

    @property
    def schedule(self) -> Schedule:
        return self.config.schedule

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def packages_dir(self) -> Path:
        return self.root / "packages"

    @property
    def rounds_dir(self) -> Path:
        return self.root / "rounds"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def signers_path(self) -> Path:
        return self.root / "allowed_signers"

    def round_dir(self, round_: int) -> Path:
        return self.rounds_dir / f"{round_:04d}"

    @classmethod
    def open(cls, root: Path) -> HubWorkspace:
        require_folder(root, "the hub workspace", fed.FEDERATION_FILE)
        if not (root / fed.FEDERATION_FILE).exists():
            raise WorkspaceError(
                "not a hub workspace",
                path=root,
                code=Code.NOT_A_WORKSPACE,
                hint="create one with 'flsilo hub init', or check the path",
            )
        return cls(root)

    def state(self) -> HubState:
        """The log folded, after its hash chain and the hub's signature over it are checked.

        Read-only and lock-free; writers use :meth:`transaction`. A writer appends the log,
        then signs it: a reader that catches it between the two sees a log its signature does
        not cover, so a failed check is read again a few times before it counts (a log that
        was really altered fails every time).
        """
        for attempt in range(UNLOCKED_READ_TRIES):
            raw, events = self.log.read_raw()
            try:
                return self._fold_checked(raw, events)
            except (VerificationError, MalformedInputError):
                if attempt == UNLOCKED_READ_TRIES - 1:
                    raise
                time.sleep(UNLOCKED_READ_PAUSE_S)
        raise AssertionError("unreachable")

    def _fold_checked(self, raw: bytes, events: list[Logged]) -> HubState:
        if not events or not isinstance(events[0].body, Init):
            raise WorkspaceError(
                "event log is missing or does not start with init",
                path=self.log.path,
                code=Code.LOG_MISSING,
                hint="restore events.jsonl from backup",
            )
        state = fold(events)
        assert state.hub_key is not None
        self.pending = check_log_signature(self.log.path, raw, state.hub_key)
        return state

    def commit(self, entries: Sequence[HubEvent], key: PrivateKey) -> HubState:
        """Append ``entries`` in one atomic step, regenerate allowed_signers, sign the log head.

        Callers hold the workspace lock (prefer :meth:`transaction`, which also reads the log
        once). The log's signature is written last, after a pending-commit journal that the
        next command completes it from (:mod:`hub_kit.journal`): never an unsigned history.
        """
        raw, events = self.log.read_raw()
        return self._commit(raw, events, entries, key)[2]

    def _commit(
        self,
        raw: bytes,
        events: list[Logged],
        entries: Sequence[HubEvent],
        key: PrivateKey,
    ) -> tuple[bytes, list[Logged], HubState]:
        signer = fold(events).hub_key
        for entry in entries:
            if isinstance(entry, RotateKey):  # the new key signs the log from its rotation on
                signer = parse_public_line(entry.hub_key)
        if signer is None or public_of(key).blob != signer.blob:
            raise UsageError(
                "this is not the hub's key: the log is signed only with the key in hub.toml",
                path=self.key_path,
                code=Code.WRONG_HUB_KEY,
                hint="check the key path in hub.toml",
            )
        new, added = self.log.extend(entries, base=(raw, events))
        state = fold(events + added)
        write_signed_log(self.log.path, raw, new, key, lambda: self.write_allowed_signers(state))
        return new, events + added, state

    def transaction(self, what: str, *, wait_s: float | None = None) -> HubTransaction:
        """The one way to change hub state: ``with ws.transaction("enroll") as tx: ...``."""
        return HubTransaction(self, what, wait_s)

    def unrecorded(self, state: HubState) -> list[str]:
        """Packages and round folders the log does not know (audit and status report them)."""
        found = []
        known = set(state.package_files.values())
        if self.packages_dir.is_dir():
            for path in sorted(self.packages_dir.iterdir()):
                base = path.name.split(".safetensors")[0] + ".safetensors"
                if base not in known and not path.name.startswith("."):
                    found.append(f"packages/{path.name}: not a package the event log issued")
        for path in sorted(self.rounds_dir.iterdir()) if self.rounds_dir.is_dir() else []:
            found.extend(round_entry_note(path, state.round))
        return found

    def current_package(self, state: HubState) -> Path:
        return self.packages_dir / state.package_files[state.round]

    def write_allowed_signers(self, state: HubState) -> None:
        write_text(self.signers_path, render_allowed_signers(state))

    def trust(self, state: HubState) -> AllowedSigners:
        """The trust the log defines; refused if allowed_signers was edited outside flsilo.

        Never writes: a missing file is regenerated by the next hub transaction.
        """
        expected = render_allowed_signers(state)
        try:
            actual = self.signers_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            actual = expected
        if actual != expected:
            raise VerificationError(
                "allowed_signers differs from the enrolments in the event log",
                path=self.signers_path,
                code=Code.SIGNERS_EDITED,
                hint="use 'flsilo hub enroll/revoke' to change trust; restore the file by "
                "deleting it (it is regenerated from the log)",
            )
        return AllowedSigners(signer_entries(state), source=str(self.signers_path))


class HubTransaction:
    """Lock -> read and fold the log once -> finish committed rounds -> append -> regenerate.

    Every hub writer (enroll, revoke, rekey, aggregate) runs inside one. A writer that
    finds the workspace locked waits a bounded time (``FLSILO_LOCK_WAIT`` seconds, default
    10) with a message, then fails with ``error[locked]`` having written nothing.
    """

    def __init__(self, ws: HubWorkspace, what: str, wait_s: float | None) -> None:
        self.ws = ws
        self.what = what
        self._lock = WorkspaceLock(ws.root, "hub workspace", wait_s=lock_wait(wait_s))
        self._events: list[Logged] = []
        self._raw = b""
        self.state = HubState()
        self.finished: list[int] = []
        """Committed rounds whose files this transaction published (an interrupted
        aggregate's): :func:`hub_kit.commit.roll_forward`."""
        self._started = 0

    def __enter__(self) -> HubTransaction:
        self._lock.__enter__()
        try:
            self._raw, self._events = self.ws.log.read_raw()
            self.state = self.ws._fold_checked(self._raw, self._events)
            if self.ws.pending is not None or not self.ws.signers_path.exists():
                self.ws.write_allowed_signers(self.state)  # a commit killed before its signature
            finish_pending(self.ws.log.path, self.ws.pending, len(self._events))
            self.finished = roll_forward(self.ws.root, self.ws.rounds_dir, self.state.round)
            self._started = self.state.round
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is not None:  # a failed command leaves no uncommitted staging folder
                discard_uncommitted(self.ws.rounds_dir, lambda: fold(self.ws.log.read()).round)
            if isinstance(exc[1], KeyboardInterrupt | Interrupted):  # stopped after a commit?
                after = interrupted_after_commit(
                    exc[1], self.ws.rounds_dir, self._started, self._committed_now()
                )
                if after is not None:
                    raise after from exc[1]
        finally:
            self._lock.__exit__(*exc)

    def _committed_now(self) -> int:
        """The rounds the log holds now (an interrupt may have come inside the append)."""
        try:
            return fold(self.ws.log.read()).round
        except FlsiloError:
            return self.state.round

    def commit(self, entries: Sequence[HubEvent], key: PrivateKey) -> HubState:
        """Commit ``entries`` in one atomic log write; refold; regenerate; sign the log."""
        self._raw, self._events, self.state = self.ws._commit(self._raw, self._events, entries, key)
        return self.state


def lock_wait(wait_s: float | None) -> float:
    if wait_s is not None:
        return wait_s
    try:
        return float(os.environ.get(LOCK_WAIT_ENV, DEFAULT_LOCK_WAIT_S))
    except ValueError:
        return DEFAULT_LOCK_WAIT_S


def hub_toml(key_path: Path, root: Path, fingerprint: str) -> str:
    """``hub.toml``: the hub key's path (relative when inside the workspace) and fingerprint."""
    values = {"key": stored_path(key_path, root), "fingerprint": fingerprint}
    return fed.dump_toml(values, "flsilo hub settings (not shared with sites)")
