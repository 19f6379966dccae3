"""Step 2 of a round: every inbox entry verified (and, for a real round, copied into the
round's staging folder); when a gate or a two-pass rule needs it, a first pass reduces each
update to a few numbers, and updates the gates refuse join the rejects; the rejects are
quarantined.

The gates: ``--norm-gate X`` refuses an update whose norm exceeds X times the round's median
update norm; ``--cosine-gate MIN`` refuses a weight update whose cosine to the round's robust
aggregate, the coordinate-wise median of all the round's updates (one vote per site,
measured in the same streaming first pass, bounded memory), is below MIN. Both are judged
on every candidate at once, against figures of all of them; a statistics round (a solved
head) has no update direction and is gated by neither.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from flsilo.format.artifact import sig_path
from flsilo.fs.atomic import BackgroundSync
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, PolicyError, VerificationError
from flsilo.signing.sshsig import parse_signature
from hub_kit.commit import StagedRound
from hub_kit.cosines import FirstPass
from hub_kit.intake import intake, quarantine
from hub_kit.roundmath import RoundView, round_view, stream_input
from hub_kit.roundprep import Prepared, RoundPolicy
from hub_kit.state import HubState
from hub_kit.strategies.base import is_two_pass
from hub_kit.streaming import StreamInput, measure
from hub_kit.verdicts import Candidate, IntakeResult, Rejection
from hub_kit.weighting import norm_gate

COSINE_GATE_MIN_SITES = 3
"""Fewest updates the cosine gate judges: with two, the median is their mean, and a large
reversed update would drag it far enough to flag the honest one."""


@dataclass
class Intake:
    """Step 2's outcome: verdicts (candidates sorted by site), the round's view of the
    bundles (whole, partial or statistics) and the first pass, if any."""

    result: IntakeResult
    view: RoundView
    gram: np.ndarray | None = None
    cosines: dict[str, float | None] = field(default_factory=dict)
    """Each measured bundle's cosine to the median update, by sha256 (from the first pass)."""
    norms: dict[str, float] = field(default_factory=dict)
    """Each measured bundle's update norm, by sha256 (from the first pass)."""

    @property
    def candidates(self) -> list[Candidate]:
        return self.result.candidates

    def note(self, candidates: list[Candidate], first: FirstPass) -> None:
        norms = np.sqrt(np.maximum(np.diag(first.gram), 0.0)).tolist()
        for c, norm, cos in zip(candidates, norms, first.cosines(), strict=True):
            self.norms[c.verified.sha256] = norm
            self.cosines[c.verified.sha256] = cos


def run_intake(
    prep: Prepared,
    staged: StagedRound | None,
    scratch: Path,
    sync: BackgroundSync | None = None,
) -> Intake:
    """Step 2: verdicts for every inbox entry, the first pass if needed, quarantine.

    With ``staged=None`` nothing is written in the workspace (a dry run); ``scratch`` is
    where a partial round lays out its base (inside the staging folder when aggregating).
    A dry run measures the bundles it would accept (norms, cosines) but gates nothing.
    """
    result = intake(
        prep.inbox,
        staged.root if staged is not None else None,
        prep.ws.config,
        prep.state,
        prep.trust,
        prep.package.header,
        prep.package.manifest.model,
        prep.plan,
        sync=sync,
    )
    result.candidates = sorted(result.candidates, key=lambda c: (c.site, c.verified.sha256))
    _revoked_hints(result, prep.state)
    view = round_view(
        prep.package_path, prep.package.header, prep.package.manifest.model, prep.plan, scratch
    )
    taken = Intake(result, view)
    if view.streams and result.candidates:  # statistics rounds have no update direction
        _first_pass(taken, prep.policy, dry_run=staged is None)
    if staged is not None:
        for rejection in result.rejections:
            quarantine(rejection, prep.ws.quarantine_dir, prep.round)
    return taken


def _first_pass(taken: Intake, policy: RoundPolicy, *, dry_run: bool) -> None:
    """Measure the candidates' updates when a gate or a two-pass rule needs it (a real
    round reads the staged copies) or for the dry run's report (the inbox files, gating
    nothing); the gates then move what they refuse to the rejections."""
    result, view = taken.result, taken.view
    candidates = result.candidates
    inputs = stream_inputs(candidates, view)
    if dry_run:  # a file changed on the stick since it was verified just loses its figures
        with suppress(OSError, ValueError):
            taken.note(candidates, measure(view.layout, view.base, inputs, median=True))
        return
    two_pass = is_two_pass(policy.rule)
    cosine = policy.cosine_gate is not None
    if len(candidates) < policy.need() or not (policy.norm_gate or cosine or two_pass):
        return
    first = measure(view.layout, view.base, inputs, pairwise=two_pass, median=cosine)
    taken.note(candidates, first)
    keep = _gate(candidates, first, policy, result)
    result.candidates = [candidates[i] for i in keep]
    taken.gram = first.gram[np.ix_(keep, keep)]


def _revoked_hints(result: IntakeResult, state: HubState) -> None:
    """A bundle signed with a key this hub revoked gets the hub's hint: when, and that there
    is nothing to do (the message, which the log records, stays as it is)."""
    for i, r in enumerate(result.rejections):
        if r.error.code != Code.KEY_REVOKED or r.sig_bytes is None:
            continue
        try:
            enrolment = state.enrolment_of(parse_signature(r.sig_bytes).public_key)
        except FlsiloError:
            continue
        if enrolment is None or enrolment.revoked_at is None:
            continue
        hint = (
            f"{enrolment.site} was revoked at {enrolment.revoked_at}; refused; nothing to do "
            "(aggregate keeps the file in quarantine; to take the site back, enrol a new key "
            "for it)"
        )
        error = VerificationError(
            r.error.message, path=r.error.path, code=Code.KEY_REVOKED, hint=hint
        )
        result.rejections[i] = replace(r, error=error)


def stream_inputs(
    candidates: list[Candidate], view: RoundView, weights: list[float] | None = None
) -> list[StreamInput]:
    """The candidates' staged copies as the aggregator reads them (``weights``: after a cap)."""
    return [
        stream_input(c.verified.path, c.verified.header, c.weight if weights is None else w, view)
        for c, w in zip(candidates, weights or [0.0] * len(candidates), strict=True)
    ]


def _gate(
    candidates: list[Candidate], first: FirstPass, policy: RoundPolicy, result: IntakeResult
) -> list[int]:
    """Move updates the norm gate or the cosine gate refuses to the rejections; return the
    indices of the candidates kept."""
    errors: list[PolicyError | None] = [None] * len(candidates)
    if policy.norm_gate:
        norms = np.sqrt(np.maximum(np.diag(first.gram), 0.0)).tolist()
        over, median = norm_gate(norms, policy.norm_gate)
        for i in (i for i, o in enumerate(over) if o):
            errors[i] = PolicyError(
                f"update norm {norms[i]:.4g} exceeds {policy.norm_gate:g} x the median norm "
                f"{median:.4g}",
                path=candidates[i].inbox_path,
                code=Code.NORM_GATE,
                hint="ask the site whether training diverged or its data changed; "
                "if the update is genuine, raise --norm-gate",
            )
    gate = policy.cosine_gate
    if gate is not None and len(candidates) >= COSINE_GATE_MIN_SITES:
        for i, cos in enumerate(first.cosines()):
            if errors[i] is None and cos is not None and cos < gate:
                errors[i] = PolicyError(
                    f"update's cosine {cos:.3f} to the round's median update is below the "
                    f"cosine gate {gate:g}",
                    path=candidates[i].inbox_path,
                    code=Code.COSINE_GATE,
                    hint="the update points away from the other sites' (a sign flip, a "
                    "wrong label order, diverged training): ask the site; if it is genuine "
                    "(e.g. strong DP noise), lower --cosine-gate",
                )
    for c, error in zip(candidates, errors, strict=True):
        if error is None:
            continue
        if c.staged is not None:
            sig_path(c.staged).unlink(missing_ok=True)
        result.rejections.append(
            Rejection(
                c.inbox_path,
                c.site,
                c.verified.sha256,
                error,
                c.staged,
                c.verified.signature_bytes,
            )
        )
    return [i for i, error in enumerate(errors) if error is None]
