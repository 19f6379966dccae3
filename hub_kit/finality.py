"""``hub init --require-evaluations M``: the final package is final only after M distinct
sites' signed evaluation reports on it verify.

The schedule's last package carries ``final: true`` in its manifest as before: that says the
schedule ended. With M > 0 it is *final for use* only once M different enrolled sites have
each sent a signed evaluation report on it (``flsilo evaluate PACKAGE --site S --data
HELD_OUT --report``) that verifies and is archived and logged at the hub. M is recorded in
the log's signed ``init`` event (``require_evaluations``; absent when 0, so other logs keep
their bytes), not read from ``federation.toml``. ``hub status``, ``hub evaluations`` and the
model card show the count; the card calls the package final only when it is.

Reports on the final package arrive after the last ``aggregate``, so ``hub evaluations
--inbox DIR --archive`` takes them in: verified, copied into the folder of the round that
made the final package (its ``SHA256SUMS`` keeps the round's lines and gains theirs) and
logged by an ``evaluation`` event each, as ``aggregate`` does for earlier packages. Only
logged reports count; an interrupted ``--archive`` is finished by running it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsilo.format.artifact import sha256_file
from flsilo.fs.atomic import write_text
from flsilo.fs.untrusted import MAX_SMALL_FILE_BYTES, read_bounded
from flsilo.runtime.errors import MalformedInputError, UsageError
from flsilo.signing.checksums import SUMS_FILE, parse_sums, render_sums
from flsilo.signing.evalreport import VerifiedReport, sig_of
from flsilo.signing.keys import PassphraseSource, load_private_key
from hub_kit.evaluations import Refused, evaluation_event, signer_enrolment, take_in
from hub_kit.events import Evaluation, Init, Logged, of_kind
from hub_kit.roundprep import resolve_inbox
from hub_kit.state import HubState
from hub_kit.workspace import HubWorkspace


def required_evaluations(events: Sequence[Logged]) -> int:
    """M, as the log's signed ``init`` event records it."""
    for _, init in of_kind(events, Init):
        return init.require_evaluations or 0
    return 0


@dataclass(frozen=True)
class Finality:
    """Whether the federation's final package is final for use."""

    required: int
    round: int
    package: str | None
    """The final package's file name; None until the last round is aggregated."""
    sites: tuple[str, ...]
    """Sites whose archived, verified reports are on the final package."""
    pending: tuple[str, ...] = ()
    """Further sites whose verified reports on it are only in the inbox given."""

    @property
    def final(self) -> bool:
        return self.package is not None and len(self.sites) >= self.required

    def text(self) -> str:
        need = f"{self.required} site's" if self.required == 1 else f"{self.required} sites'"
        if self.package is None:
            return f"the final package (r{self.round:04d}) is not made yet" + (
                f"; it will be final once {need} evaluation reports on it verify"
                if self.required
                else ""
            )
        have = f"{len(self.sites)} of {need} evaluation reports on it verify" + (
            f" ({', '.join(self.sites)})" if self.sites else ""
        )
        if self.final:
            return f"{self.package} is final" + (f": {have}" if self.required else "")
        waiting = f"; {', '.join(self.pending)} in the inbox, to archive" if self.pending else ""
        return f"{self.package} is not final yet: {have}{waiting}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "round": self.round,
            "package": self.package,
            "sites": list(self.sites),
            "pending": list(self.pending),
            "final": self.final,
        }


def finality(
    ws: HubWorkspace,
    state: HubState,
    events: Sequence[Logged],
    archived: list[VerifiedReport],
    pending: list[VerifiedReport] | None = None,
) -> Finality:
    """The final package's standing from verified reports (``hub_kit.evaluations.collect``):
    of ``archived``, those the log records (an ``evaluation`` event) count, and none signed
    with a key the log has since revoked."""
    last = ws.schedule.rounds
    sha = state.packages.get(last)

    logged = {e.sha256 for _, e in of_kind(events, Evaluation)}

    def on_final(reports: list[VerifiedReport]) -> list[str]:
        return sorted(
            {
                v.site
                for v in reports
                if v.round == last and v.package_sha256 == sha and not _revoked(v, state)
            }
        )

    # a report counts once the log records it: a file in a round folder alone does not
    sites = on_final([v for v in archived if v.sha256 in logged]) if sha is not None else []
    later = on_final(pending or []) if sha is not None else []
    return Finality(
        required=required_evaluations(events),
        round=last,
        package=state.package_files.get(last),
        sites=tuple(sites),
        pending=tuple(s for s in later if s not in sites),
    )


def _revoked(v: VerifiedReport, state: HubState) -> bool:
    """Whether the log has revoked the key that signed ``v`` (its report no longer counts)."""
    enrolment = signer_enrolment(v, state)
    return enrolment is None or enrolment.revoked_at is not None


def _listed(folder: Path) -> dict[str, str]:
    """The round folder's ``SHA256SUMS`` lines, as the round wrote them."""
    path = folder / SUMS_FILE
    data = read_bounded(path, MAX_SMALL_FILE_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedInputError(
            "not UTF-8 text", path=path, hint="run 'flsilo audit' on the hub"
        ) from err
    return parse_sums(text, source=str(path))


def archive_final_reports(
    ws: HubWorkspace, inbox: Path, passphrase: PassphraseSource
) -> tuple[list[VerifiedReport], list[Refused]]:
    """After the last round: the inbox's verified reports not yet logged, archived into the
    folder of the round that made the final package and logged (the hub key signs the log).

    Before it, ``aggregate`` archives reports with each round, so this refuses; so does an
    ``inbox`` that is not a folder (a mistyped path archives nothing, and says so)."""
    inbox = resolve_inbox(ws, inbox)
    with ws.transaction("evaluations") as tx:
        state = tx.state
        if state.round < ws.schedule.rounds:
            raise UsageError(
                f"the federation is at round {state.round} of {ws.schedule.rounds}: "
                "reports are archived by the next aggregate",
                path=inbox,
                hint="carry the reports with the round's bundles; 'flsilo aggregate' takes "
                "them in (--archive is for reports on the final package)",
            )
        key = load_private_key(ws.key_path, passphrase)  # before any write: a wrong key fails
        folder = ws.round_dir(state.round - 1)
        listed = _listed(folder)  # before any write: a folder without its SHA256SUMS fails
        kept, refused = take_in(ws, state, inbox, folder)
        if kept:
            # the round's lines stay as they were, the reports are added: a file that is not
            # the round's stays unlisted (audit names it), whatever else is in the folder
            added = {v.path.name: v.sha256 for v in kept} | {
                sig.name: sha256_file(sig) for sig in (folder / sig_of(v.path).name for v in kept)
            }
            write_text(folder / SUMS_FILE, render_sums(listed | added))
            archive_round = state.round - 1
            tx.commit([evaluation_event(v, archive_round) for v in kept], key)
    return kept, refused
