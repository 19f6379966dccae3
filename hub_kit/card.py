"""The model card's evidence: gathered only from what verifies, or not at all.

``card_evidence`` runs the whole audit from a trust root confirmed outside the workspace
(``hub_kit.audit``), verifies the package the card is about against the hub key of its
round, and then reads the federation's history from the verified log, the plan and model
from verified packages, and the sites' figures from evaluation reports that verify. Any
failure refuses the card (``card-evidence``, exit 3) with the failed check named: a card
is never written from evidence that does not verify. ``hub_kit.card_render`` turns the
evidence into Markdown and HTML; the JSON is the evidence itself. ``write_card`` is
``flsilo report``: the evidence, then the card's files written into a new folder at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsilo.format import manifest as mf
from flsilo.format.artifact import Verified, verify_file
from flsilo.fs.atomic import atomic_directory
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, UsageError, VerificationError
from flsilo.signing.trust import SingleKey
from flsilo.tasks import primary_metric
from hub_kit import card_render
from hub_kit.audit import AuditReport, audit
from hub_kit.audit_trust import TrustRoot, trust_root
from hub_kit.evaluations import archived_folders, collect
from hub_kit.events import Accept, Logged, of_kind
from hub_kit.finality import finality
from hub_kit.history import chance_classes, history, warnings
from hub_kit.state import HubState, fold
from hub_kit.workspace import HubWorkspace

CARD_VERSION = 1


@dataclass(frozen=True)
class Evidence:
    """Everything the card says, each part from a verified source."""

    doc: dict[str, Any]
    audit: AuditReport


@dataclass(frozen=True)
class Card:
    """A card written: its evidence document (``card.json``) and the plots drawn."""

    doc: dict[str, Any]
    plots: tuple[str, ...]
    """The PNGs beside the card, by name; none without the plot extra."""


def write_card(
    package: Path,
    hub_dir: Path,
    out: Path,
    fingerprint: str | None,
    key: Path | None,
    *,
    replay: bool = False,
) -> Card:
    """``flsilo report``: the card of ``package`` (card.json, card.md, card.html and its
    plots) written into the new folder ``out`` at once, trusting the hub key given by
    ``fingerprint`` or ``key``; or a refusal, with nothing written."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            "the output folder exists and is not empty",
            path=out,
            code=Code.EXISTS,
            hint="give a new folder for the card (a card is never written over another)",
        )
    root = trust_root(fingerprint, key)
    doc = card_evidence(package, hub_dir, root, replay=replay).doc
    plots = card_render.plots(doc)
    with atomic_directory(out) as staging:
        (staging / "card.json").write_text(
            json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        (staging / "card.md").write_text(card_render.markdown(doc, plots), encoding="utf-8")
        (staging / "card.html").write_text(card_render.page(doc, plots), encoding="utf-8")
        for name, png in plots.items():
            (staging / f"{name}.png").write_bytes(png)
    return Card(doc, tuple(plots))


def _refuse(path: Path | str, why: str, hint: str) -> VerificationError:
    return VerificationError(why, path=path, code=Code.CARD_EVIDENCE, hint=hint)


def card_evidence(
    package: Path, hub_dir: Path, root: TrustRoot, *, replay: bool = False
) -> Evidence:
    """The card's evidence for ``package`` of the hub at ``hub_dir``, or a refusal."""
    report = audit(hub_dir, root, replay=replay)
    if not report.ok:
        failed = [c for c in report.checks if not c.ok]
        raise _refuse(
            hub_dir,
            f"the audit failed ({failed[0].name}: {failed[0].detail}"
            + (f"; {len(failed) - 1} more" if len(failed) > 1 else "")
            + "): no card is written from evidence that does not verify",
            "run 'flsilo audit' with the same trust root for every failed check",
        )
    ws = HubWorkspace.open(hub_dir)
    events = ws.log.read()
    state = fold(events)
    verified = _the_package(package, state)
    packages = _lineage(ws, state, verified.manifest.round)
    plan_source = next(
        (v for v in reversed(packages) if v.manifest.package and v.manifest.package.plan), None
    )
    evaluations = collect(ws, state, archived_folders(ws), events)
    if evaluations.refused:
        bad = evaluations.refused[0]
        raise _refuse(
            bad.path,
            f"an archived evaluation report does not verify ({bad.code}: {bad.reason})",
            "run 'flsilo hub evaluations' to see every report and its reason",
        )
    metric = primary_metric(verified.manifest.model.task_spec.name)
    rounds = [r for r in history(events, metric) if r.round < verified.manifest.round]
    standing = finality(ws, state, events, evaluations.reports)
    doc = {
        "card_version": CARD_VERSION,
        "package": _package_entry(verified),
        "federation": _federation(ws, verified, plan_source),
        "rounds": [_round_entry(r) for r in rounds],
        "warnings": warnings(
            rounds,
            chance_classes(verified.manifest.model.task_spec.name, verified.manifest.model.classes),
            metric,
        ),
        "lineage": [_package_entry(v) for v in packages],
        "finality": standing.to_dict() | {"text": standing.text()},
        "dp_spent": _dp_spent(events, verified.manifest.round),
        "evaluations": [
            {
                "site": v.site,
                "round": v.round,
                "report": v.path.name,
                "archive": f"rounds/{v.path.parent.name}/{v.path.name}",
                "sha256": v.sha256,
                "signer": v.signer_fingerprint,
                "samples": v.report["samples"],
                "metrics": v.report["metrics"],
            }
            for v in evaluations.reports
            if v.round <= verified.manifest.round
        ],
        "audit": {
            "ok": report.ok,
            "trust_root": report.trust_root,
            "checks": len(report.checks),
            "replay": replay,
        },
    }
    return Evidence(doc, report)


def _the_package(package: Path, state: HubState) -> Verified:
    """``package``, verified against the hub key of its round and found in the log."""
    try:
        scan_round = _round_of(package, state)
        verified = verify_file(
            package,
            SingleKey(state.package_keys[scan_round], "the hub key of that round"),
            expected_kind=mf.KIND_PACKAGE,
        )
    except FlsiloError as err:
        raise _refuse(
            package, f"the package does not verify ({err.message})", err.hint or ""
        ) from err
    if state.packages.get(verified.manifest.round) != verified.sha256:
        raise _refuse(
            package,
            f"this hub's log records another package for round {verified.manifest.round}",
            "give a package this hub issued (its packages/ folder)",
        )
    return verified


def _round_of(package: Path, state: HubState) -> int:
    for round_, name in state.package_files.items():
        if name == package.name:
            return round_
    raise _refuse(
        package,
        "this hub's log names no package of this file name",
        f"give one of its packages, e.g. {state.package_files.get(state.round, 'packages/…')}",
    )


def _lineage(ws: HubWorkspace, state: HubState, upto: int) -> list[Verified]:
    """Packages r0 .. r``upto``, each verified with the hub key of its round (audit checked
    the parent links and digests against the log)."""
    return [
        verify_file(
            ws.packages_dir / state.package_files[r],
            SingleKey(state.package_keys[r], "the hub key of that round"),
            expected_kind=mf.KIND_PACKAGE,
        )
        for r in range(upto + 1)
    ]


def _package_entry(v: Verified) -> dict[str, Any]:
    info = v.manifest.package
    assert info is not None
    return {
        "file": v.path.name,
        "round": v.manifest.round,
        "sha256": v.sha256,
        "parent_sha256": info.parent_sha256,
        "created_at": v.manifest.created_at,
        "final": info.final,
        "hub_claim": mf.to_jsonable(info.hub_evaluation),
        "strategy": info.provenance.strategy if info.provenance else None,
        "inputs": [
            {"site": i.site, "samples": i.samples, "weight": i.weight}
            for i in (info.provenance.inputs if info.provenance else ())
        ],
    }


def _federation(ws: HubWorkspace, v: Verified, plan_from: Verified | None) -> dict[str, Any]:
    model = v.manifest.model
    info = v.manifest.package
    assert info is not None
    plan = plan_from.manifest.package.plan if plan_from and plan_from.manifest.package else None
    return {
        "id": v.manifest.federation,
        "task": model.task_spec.name,
        "model": model.spec,
        "model_code_digest": model.code_digest,
        "classes": list(model.classes),
        **(
            {"charset": model.task_spec.charset, "max_length": model.task_spec.max_length}
            if model.task_spec.charset
            else {}
        ),
        "input_shape": list(model.input_shape),
        "schedule": mf.to_jsonable(info.schedule),
        "plan": mf.to_jsonable(plan) if plan else None,
        "plan_from": plan_from.path.name if plan_from else None,
        "hub_policy": mf.to_jsonable(ws.config.hub),
        "software": v.manifest.software,
    } | _origin(model)


def _origin(model: mf.ModelInfo) -> dict[str, Any]:
    """The adapters and the start file's provenance, where the model has them."""
    out: dict[str, Any] = {"adapters": model.adapters} if model.adapters else {}
    return out | ({"start": mf.to_jsonable(model.start)} if model.start else {})


def _round_entry(r: Any) -> dict[str, Any]:
    return {
        "round": r.round,
        "package": r.package,
        "strategy": r.strategy,
        "time": r.time,
        "accuracy_after": r.accuracy_after,
        "primary_after": r.primary_after,
        "sites": [
            {
                "site": s.site,
                "verdict": s.verdict_text,
                "samples": s.samples,
                "share": s.share,
                "accuracy_after": s.accuracy_after,
                "primary_after": s.primary_after,
            }
            for s in r.sites
        ],
    }


def _dp_spent(events: Sequence[Logged], upto: int) -> dict[str, float]:
    """Each site's largest cumulative epsilon in the accept events up to the package."""
    spent: dict[str, float] = {}
    for _, a in of_kind(events, Accept):
        if a.round < upto and a.dp_epsilon_total is not None:
            spent[a.site] = max(spent.get(a.site, 0.0), float(a.dp_epsilon_total))
    return spent
