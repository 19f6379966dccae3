"""``flsilo hub status``: where the federation stands and which bundles are still missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flsilo.format import manifest as mf
from flsilo.format.tensorfile import read_header
from flsilo.fs.untrusted import open_regular
from flsilo.plans.plan import schedule_text
from flsilo.runtime.errors import FlsiloError
from flsilo.runtime.notices import notice
from hub_kit.evaluations import archived_folders, collect
from hub_kit.finality import finality
from hub_kit.privacy import describe, dp_budget, dp_plan, dp_spent
from hub_kit.state import HubState
from hub_kit.workspace import HubWorkspace


@dataclass(frozen=True)
class Status:
    federation: str
    round: int
    rounds: int
    final: bool
    schedule: str
    current_package: str
    sites: list[dict[str, Any]]
    inbox: list[dict[str, Any]]
    missing: list[str]
    dp_budget: float | None = None
    dp_plan: str | None = None
    unrecorded: list[str] = field(default_factory=list)
    finality: dict[str, Any] = field(default_factory=dict)
    """Whether the final package is final for use (``hub_kit.finality``): ``required``,
    ``round``, ``package``, ``sites``, ``pending``, ``final``, and ``text``."""


def peek(path: Path) -> mf.Manifest | None:
    """Read only the header's claims (unverified) to tell the administrator what arrived.

    Opened like intake opens it (a regular file, no link followed, a FIFO cannot block).
    """
    try:
        opened = open_regular(path)
        with opened.fh:
            header, _ = read_header(opened.fh, opened.size, str(path))  # type: ignore[arg-type]
        return mf.decode(header.metadata, str(path))
    except (FlsiloError, OSError):
        return None


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; False for a name the file system cannot even look up."""
    try:
        return path.exists()
    except OSError:  # ENAMETOOLONG: an inbox name near the limit, plus ".sig"
        return False


def status(hub_dir: Path) -> Status:
    ws = HubWorkspace.open(hub_dir)
    state = ws.state()
    if ws.pending is not None:
        notice(
            f"{ws.log.path}: its last {ws.pending.lines()} lines, appended by a command "
            "interrupted before it signed them, are covered by the hub's signature in the "
            "pending-commit journal; the next hub command that changes the workspace puts it "
            "in place"
        )
    schedule = ws.schedule
    inbox = []
    present: set[str] = set()
    for path in sorted(ws.inbox.glob("*.safetensors")) if ws.inbox.is_dir() else []:
        m = peek(path)
        site = m.bundle.site if m and m.bundle else None
        for_round = m.round if m else None
        if site and for_round == state.round:
            present.add(site)
        inbox.append(
            {
                "file": path.name,
                "site": site,
                "round": for_round,
                "signature": _exists(path.with_name(path.name + ".sig")),
                "readable": m is not None,
            }
        )
    sites = [
        {
            "site": e.site,
            "fingerprint": e.key.fingerprint,
            "role": e.role,
            "revoked_at": e.revoked_at,
            "bundle_present": e.site in present,
            "dp_epsilon_spent": dp_spent(state.dp_accepted.get(e.site, ())),
        }
        for e in state.enrolments
    ]
    final = state.round >= schedule.rounds
    return Status(
        federation=ws.config.federation,
        round=state.round,
        rounds=schedule.rounds,
        final=final,
        schedule=schedule_text(ws.config.schedule),
        current_package=str(ws.current_package(state)),
        sites=sites,
        inbox=inbox,
        missing=[] if final else [s for s in state.active_sites() if s not in present],
        dp_budget=dp_budget(ws.config),
        dp_plan=describe(dp) if (dp := dp_plan(ws.config)) else None,
        unrecorded=ws.unrecorded(state),
        finality=_finality(ws, state),
    )


def _finality(ws: HubWorkspace, state: HubState) -> dict[str, Any]:
    """The final package's standing, counted from the archived reports that verify."""
    events = ws.log.read()
    standing = finality(ws, state, events, collect(ws, state, archived_folders(ws), events).reports)
    return standing.to_dict() | {"text": standing.text()}
