"""``flsilo audit``: check the whole chain of rounds, offline, from the workspace and a trust
root the auditor confirmed outside it (``hub_kit.audit_trust``).

Checks, each reported separately: the log's hash chain; its hub key rotations and the trust
root; the log's signature and what the workspace holds past the log (packages, round
folders, server state files, each state file against the log's digest); allowed_signers against the log;
every package's hub signature, digest, round and parent link; every archived bundle's site
signature (judged at the time the hub accepted it), digest and presence; each package's
provenance against the log; and with ``replay``, every aggregation recomputed from the
archived bundles, its tensor bytes compared with the package's.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flsilo.format import manifest as mf
from flsilo.format.artifact import Verified, sha256_file, verify_file
from flsilo.format.tensorfile import FLOAT_DTYPES, NUMPY_DTYPE, to_float64
from flsilo.fs.untrusted import read_span
from flsilo.plans.preprocessing import model_preprocess
from flsilo.runtime import progress
from flsilo.runtime.errors import FlsiloError
from flsilo.signing.trust import AllowedSigners, SingleKey
from hub_kit.archive import check_sums
from hub_kit.audit_trust import (
    TrustRoot,
    audit_anchor,
    audit_hub_key_copies,
    check_trust_root,
)
from hub_kit.commit import STAGING_SUFFIX
from hub_kit.evaluations import audit_reports
from hub_kit.events import Accept, Aggregate, Logged, Reject, of_kind
from hub_kit.fedstats import held
from hub_kit.hubeval import audit_claim
from hub_kit.roundmath import (
    RoundView,
    ViewKind,
    compute_round,
    next_statistics,
    open_server,
    recorded_start,
    round_view,
    stream_input,
)
from hub_kit.state import HubState, fold, render_allowed_signers, signer_entries
from hub_kit.strategies import from_provenance
from hub_kit.streaming import StreamInput
from hub_kit.workspace import HubWorkspace


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class AuditReport:
    hub: str
    rounds: int = 0
    checks: list[Check] = field(default_factory=list)
    trust_root: dict[str, str | None] | None = None
    """The hub key the audit trusted: its fingerprint, how it was given, where the log reaches it."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))


def audit(
    hub_dir: Path, root: TrustRoot, *, replay: bool = False, against: tuple[Path, ...] = ()
) -> AuditReport:
    """Audit ``hub_dir`` trusting only ``root``, the hub key confirmed outside the workspace."""
    ws = HubWorkspace.open(hub_dir)
    report = AuditReport(hub=str(hub_dir))
    try:
        raw = ws.log.path.read_bytes()
        events = ws.log.read()
        state = fold(events)
    except (FlsiloError, OSError) as err:  # a broken link or an event with garbled fields
        report.add("event log chain", False, str(err))
        return report
    report.add("event log chain", True, f"{len(events)} events, hash chain intact")
    report.rounds = state.round
    if not check_trust_root(report, events, ws.config.federation, root, str(ws.log.path)):
        return report  # no hub key of this log is trusted: nothing else can be judged
    audit_anchor(ws, report, raw, events, state, against)
    _audit_workspace_files(ws, report, state)
    trust = AllowedSigners(signer_entries(state, revocations=False), source="event log enrolments")
    progress.expect(**_work(ws, state))
    packages = _audit_packages(ws, report, state)
    accepts: dict[int, list[tuple[Logged, Accept]]] = {}
    rejects: dict[int, list[Reject]] = {}
    for ev, accept in of_kind(events, Accept):
        accepts.setdefault(accept.round, []).append((ev, accept))
    for _, reject in of_kind(events, Reject):
        rejects.setdefault(reject.round, []).append(reject)
    aggregates = {agg.round: agg for _, agg in of_kind(events, Aggregate)}
    for round_ in range(state.round):
        bundles = _audit_bundles(ws, report, round_, accepts.get(round_, []), trust, state)
        sums_problem = check_sums(ws.round_dir(round_))
        report.add(
            f"SHA256SUMS r{round_:04d}", sums_problem is None, sums_problem or "every file matches"
        )
        package = packages.get(round_ + 1)
        if package is None:
            continue
        audit_claim(report.add, round_ + 1, package, aggregates.get(round_))
        prov = _audit_provenance(report, round_, package, accepts, rejects)
        if replay and prov is not None and len(bundles) == len(prov.inputs):
            recorded = state.package_data.get(round_ + 1, package.data_sha256)
            _replay(report, ws, round_, packages.get(round_), package, prov, bundles, recorded)
    audit_reports(report.add, ws, state, events)
    return report


def _audit_workspace_files(ws: HubWorkspace, report: AuditReport, state: HubState) -> None:
    """allowed_signers and the hub key copies against the log; no round folder it does not know."""
    expected_signers = render_allowed_signers(state)
    actual = ws.signers_path.read_text(encoding="utf-8") if ws.signers_path.exists() else ""
    report.add(
        "allowed_signers",
        actual == expected_signers,
        "matches enrolments in the log"
        if actual == expected_signers
        else "differs from the log's enrolments",
    )
    audit_hub_key_copies(ws, report, state)
    rounds = [n for n in ws.unrecorded(state) if n.startswith("rounds/")]
    # a killed command's uncommitted staging folder holds nothing anyone trusts (the next
    # aggregate discards it): noted, not failed; anything else the log does not know fails
    attempts = [n for n in rounds if _uncommitted_attempt(n, state.round)]
    rounds = [n for n in rounds if n not in attempts]
    report.add(
        "round folders known to the log",
        not rounds,
        "; ".join(rounds)
        or "every round folder is a committed round"
        + (
            f" ({len(attempts)} uncommitted attempt left by an interrupted command, ignored)"
            if attempts
            else ""
        ),
    )


def _uncommitted_attempt(note: str, committed: int) -> bool:
    """``rounds/NNNN.staging`` of a round the log has not committed: a killed attempt."""
    name = note.split(":", 1)[0].removeprefix("rounds/")
    number = name.removesuffix(STAGING_SUFFIX)
    return name.endswith(STAGING_SUFFIX) and number.isdigit() and int(number) >= committed


def _audit_packages(ws: HubWorkspace, report: AuditReport, state: HubState) -> dict[int, Verified]:
    """Every issued package: its round's hub key, digests against the log, round, parent."""
    packages: dict[int, Verified] = {}
    for round_, sha in sorted(state.packages.items()):
        path = ws.packages_dir / state.package_files[round_]
        name = f"package r{round_:04d}"
        try:
            signer = SingleKey(state.package_keys[round_], "the hub key of that round")
            v = verify_file(path, signer, expected_kind=mf.KIND_PACKAGE)
        except FlsiloError as err:
            report.add(name, False, err.one_line())
            continue
        problems = []
        if v.sha256 != sha:
            problems.append("digest differs from the log")
        logged_data = state.package_data.get(round_)
        if logged_data is not None and v.data_sha256 != logged_data:
            problems.append("data digest differs from the log")
        if v.manifest.round != round_:
            problems.append(f"manifest says round {v.manifest.round}")
        parent = state.packages.get(round_ - 1)
        assert v.manifest.package is not None
        if v.manifest.package.parent_sha256 != parent:
            problems.append("parent link does not point to the previous package")
        report.add(name, not problems, "; ".join(problems) or f"signed by hub, sha256 {sha[:16]}…")
        if not problems:
            packages[round_] = v
    return packages


def _audit_provenance(
    report: AuditReport,
    round_: int,
    package: Verified,
    accepts: dict[int, list[tuple[Logged, Accept]]],
    rejects: dict[int, list[Reject]],
) -> mf.Provenance | None:
    """The package's inputs and rejects against the log's events; the provenance if it agrees."""
    name = f"provenance r{round_ + 1:04d}"
    prov = package.manifest.package.provenance if package.manifest.package else None
    if prov is None:
        report.add(name, False, "package has no provenance")
        return None
    logged = sorted((e.site, e.sha256, e.samples, e.weight) for _, e in accepts.get(round_, []))
    claimed = sorted((i.site, i.sha256, i.samples, i.weight) for i in prov.inputs)
    rejected_logged = {(e.site, e.sha256, e.code) for e in rejects.get(round_, [])}
    rejected_claimed = {(x.site, x.sha256, x.reason) for x in prov.rejects}
    ok = logged == claimed and rejected_claimed <= rejected_logged
    report.add(
        name,
        ok,
        f"{len(claimed)} inputs match the log"
        if ok
        else "package inputs differ from the accept events in the log",
    )
    return prov if ok else None


def _audit_bundles(
    ws: HubWorkspace,
    report: AuditReport,
    round_: int,
    accepts: list[tuple[Logged, Accept]],
    trust: AllowedSigners,
    state: HubState,
) -> dict[str, Verified]:
    """Each archived bundle: its signature at acceptance time, its digest, and its key by the
    log's order (enrolled before the accept event, not revoked before it)."""
    good: dict[str, Verified] = {}
    for ev, accept in accepts:
        path = ws.round_dir(round_) / accept.file
        name = f"bundle r{round_:04d} {accept.site}"
        try:
            v = verify_file(path, trust, expected_kind=mf.KIND_BUNDLE, at=mf.iso_to_epoch(ev.time))
        except FlsiloError as err:
            report.add(name, False, err.one_line())
            continue
        if v.sha256 != accept.sha256:
            report.add(name, False, "archived bundle differs from the one the hub accepted")
            continue
        enrolment = state.enrolment_of(v.signature.public_key)
        if enrolment is None or not enrolment.active_at(ev.seq):
            report.add(
                name,
                False,
                "signing key was not enrolled, or already revoked, in the log when the hub "
                "accepted this bundle",
            )
            continue
        report.add(name, True, f"signed by {accept.site}, sha256 {v.sha256[:16]}…")
        good[v.sha256] = v
    return good


def _replay(
    report: AuditReport,
    ws: HubWorkspace,
    round_: int,
    base: Verified | None,
    package: Verified,
    prov: mf.Provenance,
    bundles: dict[str, Verified],
    recorded: str,
) -> None:
    name = f"replay r{round_ + 1:04d}"
    if base is None:
        report.add(name, False, f"cannot replay: the round {round_} package did not verify")
        return
    try:
        solved = prov.strategy.startswith(("closed-form", "federation-stats"))  # no strategy
        rule = from_provenance("fedavg" if solved else prov.strategy, prov.strategy_params)
    except FlsiloError as err:
        report.add(name, False, f"cannot replay: {err.one_line()}")
        return
    assert base.manifest.package is not None and base.manifest.package.plan is not None
    replayed = bytearray()
    with tempfile.TemporaryDirectory(prefix="flsilo-replay-") as scratch:
        view = round_view(
            base.path,
            base.scan.header,
            base.manifest.model,
            base.manifest.package.plan,
            Path(scratch) / "trainable-base",
        )
        inputs = [
            stream_input(bundles[i.sha256].path, bundles[i.sha256].scan.header, i.weight, view)
            for i in sorted(prov.inputs, key=lambda i: (i.site, i.sha256))
        ]
        try:
            start = recorded_start(ws.root, ws.config.federation, round_, prov.server)
            run = open_server(start, view.layout)
        except FlsiloError as err:
            report.add(name, False, f"cannot replay: {err.one_line()}")
            return
        try:
            compute_round(
                view, inputs, rule, replayed.extend, fisher=prov.merge == "fisher", server=run
            )
            stats_problem = _statistics_problem(view, inputs, base, package)
        finally:
            if run is not None:
                run.close()
    if stats_problem:
        report.add(name, False, stats_problem)
        return
    ok = hashlib.sha256(replayed).hexdigest() == recorded  # the data digest the log recorded
    detail = "recomputed tensors are bit-identical"
    state_problem = _state_problem(ws, run, prov.server)
    if state_problem:
        report.add(name, False, state_problem)
        return
    if ok and prov.server is not None:
        detail += f" (and the {prov.server.optimizer} state)"
    atol = prov.strategy_params.get("replay_atol")
    if (
        not ok
        and atol is not None
        and within_tolerance(package, read_data(package), replayed, atol)
    ):
        ok = True
        detail = f"recomputed tensors differ in bits but within the recorded tolerance {atol:g}"
    report.add(name, ok, detail if ok else "recomputed tensors differ from the package")


def _statistics_problem(
    view: RoundView, inputs: list[StreamInput], base: Verified, package: Verified
) -> str | None:
    """Why the federation statistics in the next package's plan are not the recomputed ones."""
    assert base.manifest.package is not None and package.manifest.package is not None
    expected = next_statistics(view, inputs, base.manifest.package.plan)
    if held(model_preprocess(package.manifest)) == expected:
        return None
    if view.kind is ViewKind.FEDSTATS:
        return "the federation statistics in the next package's plan differ from the pooled ones"
    return "the next package's plan does not carry the federation statistics of its parent"


def _state_problem(ws: HubWorkspace, run: object, step: mf.ServerStep | None) -> str | None:
    """Why the recomputed server state does not match the recorded one, or None."""
    if step is None:
        return None
    from hub_kit.server_state import STATE_DIR, ServerRun

    assert isinstance(run, ServerRun)
    if run.sha256() != step.state_out_sha256:
        return "recomputed server state differs from the package provenance's"
    path = ws.root / STATE_DIR / step.state_file
    if not path.is_file() or sha256_file(path) != step.state_out_sha256:
        return f"{STATE_DIR}/{step.state_file} is missing or altered"
    return None


def read_data(artifact: Verified) -> bytes:
    """The data section of a verified artifact (model-sized)."""
    header = artifact.scan.header
    return read_span(artifact.path, header.data_start, header.data_size)


def within_tolerance(package: Verified, recorded: bytes, replayed: bytearray, atol: float) -> bool:
    """Every float within ``atol`` of the package's, the rest equal (cross-machine replay)."""
    if len(recorded) != len(replayed):
        return False
    for info in package.scan.header.tensors:
        if info.dtype not in FLOAT_DTYPES:
            if recorded[info.begin : info.end] != replayed[info.begin : info.end]:
                return False
            continue
        raw = NUMPY_DTYPE[info.dtype]
        a = to_float64(info.dtype, np.frombuffer(recorded, raw, info.numel, info.begin))
        b = to_float64(info.dtype, np.frombuffer(replayed, raw, info.numel, info.begin))
        if not np.all(np.abs(a - b) <= atol):
            return False
    return True


def _work(ws: HubWorkspace, state: HubState) -> dict[str, int]:
    """What the checks below read, for progress: every package and archived bundle is
    verified (one unit each), and every file of a round folder is hashed against its
    SHA256SUMS, so a bundle is read twice; a replay reports as a stage of its own."""
    units = total = 0
    for name in state.package_files.values():
        size = _file_size(ws.packages_dir / name)
        if size is not None:
            units, total = units + 1, total + size
    for round_ in range(state.round):
        for path in ws.round_dir(round_).glob("*"):
            size = _file_size(path)
            if size is None:
                continue
            total += size  # hashed against SHA256SUMS
            if path.suffix == ".safetensors":  # and verified
                units, total = units + 1, total + size
    return {"units": units, "total_bytes": total}


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None
