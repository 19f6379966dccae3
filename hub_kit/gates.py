"""Step 2 of a round: every inbox entry verified (and, for a real round, copied into the
round's staging folder); when the norm gate or a two-pass rule needs it, a first pass
reduces each update to a few numbers, and updates the gates refuse join the rejects; the
rejects are quarantined."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flsilo.artifact import sig_path
from flsilo.atomic import BackgroundSync
from flsilo.codes import Code
from flsilo.errors import PolicyError
from hub_kit.commit import StagedRound
from hub_kit.intake import Candidate, IntakeResult, Rejection, intake, quarantine
from hub_kit.roundmath import RoundView, gram_of, round_view, stream_input
from hub_kit.roundprep import Prepared
from hub_kit.strategies.base import is_two_pass
from hub_kit.streaming import StreamInput
from hub_kit.weighting import norm_gate


@dataclass
class Intake:
    """Step 2's outcome: verdicts (candidates sorted by site), the round's view of the
    bundles (whole, partial or statistics) and the first pass, if any."""

    result: IntakeResult
    view: RoundView
    gram: np.ndarray | None = None

    @property
    def candidates(self) -> list[Candidate]:
        return self.result.candidates


def run_intake(
    prep: Prepared,
    staged: StagedRound | None,
    scratch: Path,
    sync: BackgroundSync | None = None,
) -> Intake:
    """Step 2: verdicts for every inbox entry, the first pass if needed, quarantine.

    With ``staged=None`` nothing is written in the workspace (a dry run); ``scratch`` is
    where a partial round lays out its base (inside the staging folder when aggregating).
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
    view = round_view(
        prep.package_path, prep.package.header, prep.package.manifest.model, prep.plan, scratch
    )
    taken = Intake(result, view)
    policy = prep.policy
    # the first pass reads the staged copies: a dry run (nothing staged) stops at the gates
    gated = staged is not None and view.streams and (policy.norm_gate or is_two_pass(policy.rule))
    if len(result.candidates) >= policy.need() and gated:
        taken.gram = gram_of(
            view, stream_inputs(result.candidates, view), pairwise=is_two_pass(policy.rule)
        )
        if policy.norm_gate:
            result.candidates, taken.gram = _gate(
                result.candidates, taken.gram, policy.norm_gate, result
            )
    if staged is not None:
        for rejection in result.rejections:
            quarantine(rejection, prep.ws.quarantine_dir, prep.round)
    return taken


def stream_inputs(
    candidates: list[Candidate], view: RoundView, weights: list[float] | None = None
) -> list[StreamInput]:
    """The candidates' staged copies as the aggregator reads them (``weights``: after a cap)."""
    return [
        stream_input(c.verified.path, c.verified.header, c.weight if weights is None else w, view)
        for c, w in zip(candidates, weights or [0.0] * len(candidates), strict=True)
    ]


def _gate(
    candidates: list[Candidate],
    gram: np.ndarray,
    multiple: float,
    result: IntakeResult,
) -> tuple[list[Candidate], np.ndarray]:
    """Move updates whose norm exceeds ``multiple`` x the median to the rejections."""
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0)).tolist()
    over, median = norm_gate(norms, multiple)
    keep = [i for i, o in enumerate(over) if not o]
    for i in (i for i, o in enumerate(over) if o):
        c = candidates[i]
        error = PolicyError(
            f"update norm {norms[i]:.4g} exceeds {multiple:g} x the median norm {median:.4g}",
            path=c.inbox_path,
            code=Code.NORM_GATE,
            hint="ask the site whether training diverged or its data changed; "
            "if the update is genuine, raise --norm-gate",
        )
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
    return [candidates[i] for i in keep], gram[np.ix_(keep, keep)]
