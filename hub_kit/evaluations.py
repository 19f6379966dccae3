"""The sites' signed evaluation reports at the hub: verified, archived, tabled per package.

A report is trusted only when its signature verifies in namespace ``flsilo-eval`` with the
key the log enrols for the site it names, at the time it was written (a revoked site's later
reports are refused), and when it names a package this hub issued. Reports are never
mistaken for bundles: the inbox's ``*.eval.json`` files are read here only. ``aggregate``
archives the verified reports it finds beside the bundles into the round's folder (under
the round's ``SHA256SUMS``) and logs one ``evaluation`` event for each, once; ``hub
evaluations`` shows the archived reports and, with ``--inbox``, the ones not yet carried in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flsilo.format.artifact import sha256_file
from flsilo.fs.atomic import write_bytes
from flsilo.fs.untrusted import read_bounded, read_signature_file
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, VerificationError
from flsilo.signing import evalreport as er
from flsilo.signing.claims import is_figure
from flsilo.signing.sshsig import EVAL_NAMESPACE
from flsilo.signing.trust import AllowedSigners
from hub_kit.events import Evaluation, Logged, of_kind
from hub_kit.state import ROLE_SITE, Enrolment, HubState, signer_entries
from hub_kit.workspace import HubWorkspace


def eval_trust(state: HubState, *, revocations: bool = True) -> AllowedSigners:
    """The enrolled sites' keys, allowed to sign evaluation reports (same validity;
    ``revocations=False`` as :func:`hub_kit.state.signer_entries` for audit)."""
    sites = {e.site for e in state.enrolments if e.role == ROLE_SITE}
    entries = [
        dataclasses.replace(e, namespaces=EVAL_NAMESPACE)
        for e in signer_entries(state, revocations=revocations)
        if e.principals in sites
    ]
    return AllowedSigners(entries, source="the site enrolments in the event log")


@dataclass
class Refused:
    path: Path
    code: str
    reason: str
    hint: str


@dataclass
class Collected:
    reports: list[er.VerifiedReport] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def report_files(folder: Path) -> list[Path]:
    """``*.eval.json`` files of a folder (not followed), sorted by name."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as it:
        return sorted(Path(e.path) for e in it if e.name.endswith(er.SUFFIX) and not e.is_symlink())


def check_report(
    path: Path, ws: HubWorkspace, state: HubState, verified: er.VerifiedReport | None = None
) -> er.VerifiedReport:
    """One report, verified (now, unless ``verified`` already is) and matched to a package
    this hub issued."""
    verified = verified or er.verify_report(path, eval_trust(state))
    report = verified.report
    issued = state.packages.get(verified.round)
    if report["federation"] != ws.config.federation or issued != verified.package_sha256:
        raise VerificationError(
            f"the report is about package {report['package']} "
            f"({verified.package_sha256[:12]}…, federation {report['federation']!r}), "
            "which this hub did not issue for that round",
            path=path,
            code=Code.EVAL_FOREIGN_PACKAGE,
            hint="the site evaluated a package from elsewhere; ask which package it holds",
        )
    return verified


def collect(
    ws: HubWorkspace, state: HubState, folders: list[Path], events: list[Logged] | None = None
) -> Collected:
    """Every report in ``folders``: verified ones (one per site and package, the newest
    kept) and refused ones with their reason. With the log's ``events`` (the round folders),
    a report an ``evaluation`` event records is judged as bundles are, at the time the hub
    logged it (its key enrolled and not yet revoked then, whatever the site's clock wrote);
    any other report is judged as now."""
    out = Collected()
    best: dict[tuple[str, str], er.VerifiedReport] = {}
    logged = {e.sha256: ev.seq for ev, e in of_kind(events or [], Evaluation)}
    for folder in folders:
        for path in report_files(folder):
            try:
                v = _check_logged(path, ws, state, logged) if logged else None
                v = v or check_report(path, ws, state)
            except FlsiloError as err:
                out.refused.append(Refused(path, str(err.code), err.message, err.hint or ""))
                continue
            slot = (v.site, v.package_sha256)
            if slot not in best or v.report["created_at"] > best[slot].report["created_at"]:
                best[slot] = v
    out.reports = sorted(best.values(), key=lambda v: (v.round, v.site))
    return out


def _check_logged(
    path: Path, ws: HubWorkspace, state: HubState, logged: dict[str, int]
) -> er.VerifiedReport | None:
    """``path`` verified without the revocation cuts when the log records its bytes and its
    key was the site's, enrolled and not revoked, at that event; None when the log does not
    record it (then it is judged as now)."""
    v = er.verify_report(path, eval_trust(state, revocations=False))
    seq = logged.get(v.sha256)
    if seq is None:
        return None
    enrolment = signer_enrolment(v, state)
    if enrolment is None or enrolment.site != v.site or not enrolment.active_at(seq):
        raise VerificationError(
            f"signing key was not enrolled for {v.site}, or already revoked, in the log when "
            "the hub logged this report",
            path=path,
            code=Code.KEY_REVOKED,
            hint="run 'flsilo audit' on the hub: the log and the archive disagree",
        )
    return check_report(path, ws, state, v)


def archived_folders(ws: HubWorkspace) -> list[Path]:
    """The round folders, where aggregate archives reports beside bundles, oldest first."""
    if not ws.rounds_dir.is_dir():
        return []
    return sorted(p for p in ws.rounds_dir.iterdir() if p.is_dir() and p.name.isdigit())


def logged_reports(ws: HubWorkspace) -> set[str]:
    """The sha256 of every report an ``evaluation`` event already records."""
    return {e.sha256 for _, e in of_kind(ws.log.read(), Evaluation)}


def take_in(
    ws: HubWorkspace, state: HubState, inbox: Path, archive: Path
) -> tuple[list[er.VerifiedReport], list[Refused]]:
    """The inbox's reports for ``aggregate``: verified ones not yet logged are copied into
    ``archive`` (the round's staging folder) from the bytes that verified; refused ones are
    returned with their reason and left where they are (hub inputs are never moved), as are
    reports signed with a key the log has revoked, whatever their time says."""
    found = collect(ws, state, [inbox])
    seen = logged_reports(ws)
    fresh = [v for v in found.reports if v.sha256 not in seen]
    for v in fresh:
        revoked = signer_enrolment(v, state)
        if revoked is not None and revoked.revoked_at is not None:  # as bundles: the log orders
            found.refused.append(
                Refused(
                    v.path,
                    str(Code.KEY_REVOKED),
                    f"key of {revoked.site!r} was revoked at {revoked.revoked_at}",
                    "reports signed with a revoked key are refused; the site needs a new enrolment",
                )
            )
            continue
        if _archived_other(archive / v.path.name, v.sha256):  # never replaced by another
            found.refused.append(
                Refused(
                    v.path,
                    str(Code.EXISTS),
                    "another report of this name is already archived",
                    "the site sent this package's report before; keep the archived one",
                )
            )
            continue
        try:  # read again, bounded: the stick may have changed since it verified
            data = read_bounded(v.path, er.MAX_REPORT_BYTES)
            sig = read_signature_file(er.sig_of(v.path))
        except FlsiloError as err:
            found.refused.append(Refused(v.path, str(err.code), err.message, err.hint))
            continue
        if sig is None or hashlib.sha256(data).hexdigest() != v.sha256:  # changed since
            found.refused.append(
                Refused(v.path, str(Code.BAD_SIGNATURE), "changed while it was read", "")
            )
            continue
        write_bytes(archive / v.path.name, data)
        write_bytes(archive / er.sig_of(v.path).name, sig)
    refused_paths = {r.path for r in found.refused}
    kept = [v for v in fresh if v.path not in refused_paths]
    return kept, found.refused


def signer_enrolment(v: er.VerifiedReport, state: HubState) -> Enrolment | None:
    """The enrolment of the key that signed ``v``."""
    return next((e for e in state.enrolments if e.key.fingerprint == v.signer_fingerprint), None)


def _archived_other(path: Path, sha256: str) -> bool:
    """Whether ``path`` holds another report than the one with ``sha256`` (the same bytes,
    left unlogged by an interrupted ``hub evaluations --archive``, are taken in again)."""
    if not path.exists():
        return False
    return path.is_symlink() or not path.is_file() or sha256_file(path) != sha256


def evaluation_event(v: er.VerifiedReport, archive_round: int) -> Evaluation:
    """What the log keeps of a report archived with round ``archive_round``: who, which
    package, its digest and primary figure (:func:`flsilo.signing.evalreport.primary_figure`),
    null where the report does not hold it as a number; under ``primary`` where a plug-in's
    report holds none, or its key is one of the event's own fields."""
    task = str(v.report["task"])
    name = er.primary_figure(v.report)
    value = _figure(v.report["metrics"], name)
    if name is None or name in EVENT_FIELDS:
        name = "primary"
    return Evaluation(
        archive_round=archive_round,
        site=v.site,
        round=v.round,
        package_sha256=v.package_sha256,
        report=v.path.name,
        sha256=v.sha256,
        task=task,
        samples=v.report["samples"],
        metric=name,
        value=value,
    )


def _figure(figures: dict[str, Any], name: str | None) -> float | None:
    """``figures[name]`` where it is a number, else None."""
    value = figures.get(name) if name is not None else None
    return value if is_figure(value) else None


EVENT_FIELDS = {f.name for f in dataclasses.fields(Evaluation)} | {"event", "prev", "seq", "time"}
"""The keys an ``evaluation`` event line holds beside its figure."""


@dataclass(frozen=True)
class Cell:
    value: float | None
    low: float | None = None
    high: float | None = None
    samples: int = 0
    archived: bool = True
    metric: str | None = "accuracy"
    """The key of the figure shown (the report's primary one); None: it holds none."""


def table(reports: list[er.VerifiedReport], archived: set[str]) -> dict[int, dict[str, Cell]]:
    """Rows are package rounds, columns sites: each site's primary figure (by the report's
    own key, :func:`flsilo.signing.evalreport.primary_figure`) with its interval where one is
    computed for that figure."""
    rows: dict[int, dict[str, Cell]] = {}
    for v in reports:
        figures = v.report["metrics"]
        name = er.primary_figure(v.report)
        low = high = None
        interval = _accuracy_interval(figures) if name == "accuracy" else _ci95(figures, name)
        if interval is not None:
            low, high = interval
        rows.setdefault(v.round, {})[v.site] = Cell(
            _figure(figures, name),
            low,
            high,
            int(v.report["samples"]),
            v.sha256 in archived,
            name,
        )
    return rows


def table_metric(rows: dict[int, dict[str, Cell]]) -> str | None:
    """The one figure every cell shows (its key), or None when the cells show several (each
    cell then names its own) or none."""
    names = {c.metric for row in rows.values() for c in row.values()}
    return names.pop() if len(names) == 1 else None


def _accuracy_interval(figures: dict[str, Any]) -> tuple[float, float] | None:
    """A normal-approximation 95% interval of an accuracy over ``samples`` records."""
    acc, n = figures.get("accuracy"), figures.get("samples")
    if not isinstance(acc, float) or not isinstance(n, int) or n <= 0:
        return None
    half = 1.96 * (acc * (1 - acc) / n) ** 0.5
    return max(0.0, acc - half), min(1.0, acc + half)


def _ci95(figures: dict[str, Any], name: str | None) -> tuple[float, float] | None:
    """The report's own bootstrap interval of ``name`` (sequence: exact match), if any."""
    ci95 = figures.get("ci95")
    found = ci95.get(name) if isinstance(ci95, dict) and name is not None else None
    if isinstance(found, list) and len(found) == 2 and all(isinstance(v, float) for v in found):
        return float(found[0]), float(found[1])
    return None


def audit_reports(
    add: Callable[[str, bool, str], None], ws: HubWorkspace, state: HubState, events: list[Logged]
) -> None:
    """``audit``'s lines for the archived reports: each ``evaluation`` event's report is in
    its round folder with the logged digest, its signature verifies at its time, and its key
    was enrolled for the site, not revoked, when the hub logged it; every report in a round
    folder is one the log records."""
    trust = eval_trust(state, revocations=False)
    logged: set[Path] = set()
    for ev, e in of_kind(events, Evaluation):
        path = ws.round_dir(e.archive_round) / e.report
        logged.add(path)
        name = f"evaluation report r{e.archive_round:04d} {e.report}"
        try:
            v = er.verify_report(path, trust)
        except FlsiloError as err:
            add(name, False, err.one_line())
            continue
        if v.sha256 != e.sha256:
            add(name, False, "archived report differs from the one the hub logged")
            continue
        enrolment = signer_enrolment(v, state)
        if enrolment is None or enrolment.site != e.site or not enrolment.active_at(ev.seq):
            add(
                name,
                False,
                f"signing key was not enrolled for {e.site}, or already revoked, in the log "
                "when the hub logged this report",
            )
            continue
        add(name, True, f"signed by {e.site}, sha256 {v.sha256[:16]}…, as logged")
    for folder in archived_folders(ws):
        for path in report_files(folder):
            if path not in logged:
                add(
                    f"evaluation report {folder.name}/{path.name}",
                    False,
                    "in a round folder but not recorded in the log (finish it with "
                    "'flsilo hub evaluations HUB --inbox DIR --archive')",
                )
