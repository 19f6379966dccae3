"""The intake's trust decisions, pure: what was read in, a verdict out.

Nothing here opens, reads or writes a file. Each gate takes what :mod:`hub_kit.intake`
already read (a verified scan, the bytes of the tensors a gate judges, an ``fstat`` size)
and the hub's state, and returns or raises a verdict: the hub's policy (federation, round,
base package, model, tensor set, samples, privacy), a revoked key, the sizes a bundle for
this round can have, one bundle per site. python-tuf keeps its trust decisions apart from
its fetching the same way: each can then be read, and tested, without the other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from flsilo.format import manifest as mf
from flsilo.format.artifact import Verified, sig_path
from flsilo.format.tensorfile import FLOAT_DTYPES, MAX_HEADER_BYTES, Header
from flsilo.format.tensorsets import (
    ROUND_FEDSTATS,
    ROUND_STATISTICS,
    ROUND_TRAIN,
    STAT_CLASS_COUNTS,
    STATS_COUNT,
    STATS_MISSING,
    expected_specs,
    layout_of,
)
from flsilo.plans.federation import FederationConfig
from flsilo.plans.plan import MULTILABEL
from flsilo.plans.preprocessing import stats_width
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, MalformedInputError, PolicyError, VerificationError
from flsilo.signing.trust import AllowedSigners
from hub_kit.fedstats import check_fedstats
from hub_kit.privacy import check_bundle as check_dp_bundle
from hub_kit.state import HubState
from hub_kit.streaming import FISHER_PREFIX

HEADER_SLACK_BYTES = 1 << 20
"""How much larger a bundle's header may be than its package's (its own manifest)."""


@dataclass(frozen=True)
class Candidate:
    """A verified bundle that passed every gate, staged inside the hub workspace."""

    inbox_path: Path
    staged: Path | None
    verified: Verified
    age: int
    weight: float

    @property
    def site(self) -> str:
        assert self.verified.manifest.bundle is not None
        return self.verified.manifest.bundle.site

    @property
    def samples(self) -> int:
        assert self.verified.manifest.bundle is not None
        return self.verified.manifest.bundle.num_samples


@dataclass(frozen=True)
class Rejection:
    """A refused inbox entry; ``copy`` and ``sig_bytes`` are what was read of it, if anything."""

    inbox_path: Path
    site: str
    sha256: str
    error: FlsiloError
    copy: Path | None = None
    sig_bytes: bytes | None = None


@dataclass(frozen=True)
class Skipped:
    inbox_path: Path
    sha256: str
    why: str
    site: str = "-"
    """The site the verified manifest names, or the file name claims; ``-`` where neither."""


@dataclass
class IntakeResult:
    candidates: list[Candidate]
    rejections: list[Rejection]
    skipped: list[Skipped]


@dataclass(frozen=True)
class RoundGate:
    """What the hub expects of a bundle this round (the package it must be based on, etc.)."""

    config: FederationConfig
    state: HubState
    trust: AllowedSigners
    package_header: Header
    package_model: mf.ModelInfo
    package_plan: mf.Plan
    """The round's plan from the hub's own package: never the plan a bundle claims."""

    def size_bounds(self) -> tuple[int, int]:
        """Sizes a bundle for this round can have, judged from ``fstat`` before reading.

        The data section is exactly what the round's plan asks for (whole, partial or
        statistics bundle); the header is at most the package's plus a manifest's slack.
        """
        data = self.package_header.data_size
        plan = self.package_plan
        if plan is not None:
            specs = expected_specs(
                self.package_header,
                self.package_model.head,
                plan.kind,
                plan.freeze,
                plan.head_solver,
                stats_width(plan.preprocess, self.package_model.input_shape),
                adapters=plan.adapters,
            )
            layout = layout_of(specs)
            data = layout[-1].end if layout else 0
            if plan.merge == "fisher" and plan.kind == ROUND_TRAIN:  # F32 fisher.NAME as well
                fisher = sum(t.numel * 4 for t in layout if t.dtype in FLOAT_DTYPES)
                high = min(self.package_header.header_len + HEADER_SLACK_BYTES, MAX_HEADER_BYTES)
                return 8 + 2 + data, 8 + 2 * high + data + fisher
        high = min(self.package_header.header_len + HEADER_SLACK_BYTES, MAX_HEADER_BYTES)
        return 8 + 2 + data, 8 + high + data

    def tensors_to_read(self) -> tuple[str, ...]:
        """Tensors whose values a gate judges (a statistics round's counts): the I/O side
        reads them from the verified copy and hands them to :func:`check_policy`."""
        kind = self.package_plan.kind
        if kind == ROUND_STATISTICS:
            return (STAT_CLASS_COUNTS,)
        if kind == ROUND_FEDSTATS:
            return (STATS_COUNT, STATS_MISSING)
        return ()

    def weight(self, verified: Verified, age: int) -> float:
        """The bundle's weight: its samples, discounted by its age in rounds."""
        bundle = verified.manifest.bundle
        assert bundle is not None
        return bundle.num_samples * self.config.hub.staleness_discount**age


def check_policy(verified: Verified, gate: RoundGate, tensors: Mapping[str, bytes]) -> int:
    """Raise PolicyError unless the hub may accept this bundle now; return its age in rounds.

    ``tensors``: the bytes of the tensors :meth:`RoundGate.tensors_to_read` names, as read
    from the verified copy. ``fisher``: the round's plan merges by Fisher, so the bundle
    must also carry exactly one F32 ``fisher.NAME`` tensor, shaped like NAME, for each float
    parameter it declares.
    """
    config, state = gate.config, gate.state
    m = verified.manifest
    b = m.bundle
    assert b is not None
    path = verified.path

    def refuse(code: Code, message: str, hint: str) -> PolicyError:
        return PolicyError(message, path=path, code=code, hint=hint)

    if m.federation != config.federation:
        raise refuse(
            Code.WRONG_FEDERATION,
            f"bundle is for federation {m.federation!r}, this hub runs {config.federation!r}",
            "it was carried to the wrong hub",
        )
    age = state.round - m.round
    if age < 0:
        raise refuse(
            Code.FUTURE_ROUND,
            f"bundle claims round {m.round}, the hub is at round {state.round}",
            "no package for that round was ever issued; treat the file as forged",
        )
    if age > config.hub.max_staleness:
        raise refuse(
            Code.STALE,
            f"late bundle: trained on round {m.round}'s package, the hub is at round {state.round}",
            "send the site the current package and ask it to train again"
            + ("" if config.hub.max_staleness else " (or declare a staleness policy at hub init)"),
        )
    if b.base_package_sha256 != state.packages.get(m.round):
        raise refuse(
            Code.WRONG_BASE,
            f"bundle was trained on package {b.base_package_sha256[:12]}…, not on the one this "
            f"hub issued for round {m.round}",
            "the site trained on a package that did not come from this hub",
        )
    if m.model != gate.package_model:
        raise refuse(
            Code.WRONG_MODEL,
            "bundle's model description differs from the package's",
            "the site used another model or class list",
        )
    check_tensor_set(
        verified, gate.package_header, gate.package_model, gate.package_plan, tensors, refuse
    )
    if not 0 < b.num_samples <= config.hub.max_samples:
        raise refuse(
            Code.SAMPLE_COUNT,
            f"bundle claims {b.num_samples} samples; the cap is {config.hub.max_samples}",
            "raise max_samples in federation.toml if the site really has that much data",
        )
    check_dp_bundle(verified, config, state.dp_accepted.get(b.site, ()))
    return age


def check_tensor_set(
    verified: Verified,
    package_header: Header,
    package_model: mf.ModelInfo,
    plan: mf.Plan,
    tensors: Mapping[str, bytes],
    refuse: Callable[[Code, str, str], PolicyError],
) -> None:
    """The bundle holds exactly the tensors the round's plan asks for (whole, partial, statistics).

    The plan is the hub's (from the round's package), never the one the bundle claims.
    """
    specs = expected_specs(
        package_header,
        package_model.head,
        plan.kind,
        plan.freeze,
        plan.head_solver,
        stats_width(plan.preprocess, package_model.input_shape),
        adapters=plan.adapters,
    )
    if plan.merge == "fisher" and plan.kind == ROUND_TRAIN:
        assert verified.manifest.bundle is not None
        problem = fisher_layout_problem(
            verified.scan.header, specs, verified.manifest.bundle.fisher
        )
        if problem:
            raise refuse(
                Code.WRONG_FISHER,
                f"bundle's Fisher tensors do not fit this round's plan: {problem}",
                "the round merges by Fisher: the site must train with a flsilo that ships "
                "fisher.NAME tensors (and no others)",
            )
        return
    expected = tuple(t.signature() for t in layout_of(specs))
    if verified.scan.header.layout() != expected:
        what = {
            ROUND_STATISTICS: "the head statistics this statistics round asks for",
            ROUND_FEDSTATS: "the input statistics this stats round asks for",
            ROUND_TRAIN: "the package's trainable tensors"
            if plan.freeze or plan.adapters
            else "the package's",
        }[plan.kind]
        raise refuse(
            Code.WRONG_TENSORS,
            f"bundle's tensor names, dtypes, shapes or layout differ from {what}",
            "the site trained a different model or followed another plan; it cannot be combined",
        )
    if plan.kind == ROUND_STATISTICS:
        check_statistics(verified, plan, tensors[STAT_CLASS_COUNTS], refuse)
    if plan.kind == ROUND_FEDSTATS:
        check_fedstats(verified, plan, package_model.input_shape, tensors, refuse)


def check_statistics(
    verified: Verified,
    plan: mf.Plan,
    class_counts: bytes,
    refuse: Callable[[Code, str, str], PolicyError],
) -> None:
    """Class counts are whole, sum to num_samples, and respect the plan's minimum cell size."""
    counts = np.frombuffer(class_counts, dtype="<f8")
    b = verified.manifest.bundle
    assert b is not None
    # multilabel counts positives per finding: each at most the samples, not their sum
    adds_up = np.all(counts <= b.num_samples) if plan.task == MULTILABEL else (
        counts.sum() == b.num_samples
    )  # fmt: skip
    if np.any(counts < 0) or np.any(counts != np.round(counts)) or not adds_up:
        raise refuse(
            Code.BAD_STATISTICS,
            f"class counts do not add up to the {b.num_samples} samples the bundle claims",
            "the bundle was not made by 'flsilo train'; ask the site to run it again",
        )
    small = [int(c) for c in counts if 0 < c < plan.min_cell_size]
    if small:
        raise refuse(
            Code.CELL_TOO_SMALL,
            f"bundle reveals a class with {min(small)} samples; the plan's minimum is "
            f"{plan.min_cell_size}",
            "the site should have refused this round; discard the bundle",
        )


def fisher_layout_problem(
    bundle: Header, specs: dict[str, tuple[str, tuple[int, ...]]], declared: tuple[str, ...]
) -> str | None:
    """Why a Fisher bundle's tensor set is wrong, or None when it is exactly right.

    ``specs`` is the tensor set the round asks for; the bundle must hold exactly those plus
    one F32 ``fisher.NAME`` shaped like NAME for each float tensor NAME it declares.
    """
    own = {t.name: t for t in bundle.tensors if not t.name.startswith(FISHER_PREFIX)}
    extra = {t.name: t for t in bundle.tensors if t.name.startswith(FISHER_PREFIX)}
    if {n: (t.dtype, t.shape) for n, t in own.items()} != dict(specs):
        return "the model tensors differ from those the round asks for"
    if not declared:
        return "the manifest declares no Fisher tensors"
    if set(extra) != {FISHER_PREFIX + name for name in declared}:
        return "the fisher.* tensors differ from those the manifest declares"
    for name in declared:
        spec = specs.get(name)
        f = extra[FISHER_PREFIX + name]
        if spec is None or spec[0] not in FLOAT_DTYPES or f.dtype != "F32" or f.shape != spec[1]:
            return f"fisher.{name} is not an F32 tensor shaped like a float model tensor"
    return None


def claimed_site(path: Path) -> str:
    """Best-effort site id for a report about a file that did not verify."""
    parts = path.name.removesuffix(".safetensors").split("-r")
    tail = parts[-1] if len(parts) > 1 else ""
    return tail.split("-", 1)[1] if "-" in tail else "?"


def size_error(err: FlsiloError, low: int, high: int) -> FlsiloError:
    """An entry refused by its ``fstat`` size, said as a bundle of the wrong round."""
    if err.code not in (Code.TOO_LARGE, Code.TOO_SMALL):
        return err
    hint = "this is not a bundle trained on the current package; do not carry it"
    if err.code == Code.TOO_SMALL:  # most often a copy cut short (a stick pulled too soon)
        hint = (
            "a copy cut short (a stick pulled before the copy ended) looks like this: copy the "
            "bundle and its .sig again from the site's outbox ('flsilo site status' there "
            "verifies them); if that copy is as small, do not carry it"
        )
    return MalformedInputError(
        f"{err.message.split(',')[0]}: a bundle for this round is {low} to {high} bytes; "
        "it was not read",
        path=err.path,
        code=Code.IMPLAUSIBLE_SIZE,
        hint=hint,
    )


def check_revocation(verified: Verified, state: HubState) -> None:
    """Refuse a key the log has revoked, whatever the clock says (the log orders trust)."""
    enrolment = state.enrolment_of(verified.signature.public_key)
    if enrolment is not None and enrolment.revoked_at is not None:
        raise VerificationError(
            f"key of {enrolment.site!r} was revoked at {enrolment.revoked_at}",
            path=verified.path,
            code=Code.KEY_REVOKED,
            hint="files signed with a revoked key are refused; the site needs a new enrolment",
        )


def resolve_duplicates(result: IntakeResult) -> tuple[IntakeResult, list[Path]]:
    """One bundle per site per round: identical copies collapse, conflicting ones are refused.

    Returns the result and the staged files the caller removes (an identical copy's file
    and ``.sig``; a conflicting bundle's ``.sig``: its file becomes the quarantine copy). A
    reject whose bytes equal an accepted bundle's can only be blamed on its ``.sig``: it is
    recorded as ``signature-damaged`` so the provenance does not read as if the accepted
    bundle had been refused.
    """
    drop: list[Path] = []
    by_site: dict[str, list[Candidate]] = defaultdict(list)
    for c in result.candidates:
        by_site[c.site].append(c)
    kept: list[Candidate] = []
    for site, group in sorted(by_site.items()):
        shas = {c.verified.sha256 for c in group}
        if len(shas) == 1:
            m = group[0].verified.manifest
            canonical = mf.artifact_name(m.federation, m.round, site)
            group.sort(key=lambda c: (c.inbox_path.name != canonical, c.inbox_path.name))
            kept.append(group[0])
            for extra in group[1:]:
                result.skipped.append(
                    Skipped(extra.inbox_path, extra.verified.sha256, "identical copy", site)
                )
                if extra.staged is not None:
                    drop += [extra.staged, sig_path(extra.staged)]
            continue
        names = ", ".join(c.inbox_path.name for c in group)
        for c in group:
            error = PolicyError(
                f"site {site!r} sent {len(shas)} different bundles for this round ({names})",
                path=c.inbox_path,
                code=Code.CONFLICTING_DUPLICATE,
                hint="ask the site which one is real; remove the others from the inbox and rerun",
            )
            copy = c.staged
            if copy is not None:
                drop.append(sig_path(copy))
            result.rejections.append(
                Rejection(
                    c.inbox_path, site, c.verified.sha256, error, copy, c.verified.signature_bytes
                )
            )
    result.candidates = kept
    accepted = {c.verified.sha256: c for c in kept}
    result.rejections = [_damaged_signature(r, accepted) for r in result.rejections]
    return result, drop


def _damaged_signature(rejection: Rejection, accepted: dict[str, Candidate]) -> Rejection:
    twin = accepted.get(rejection.sha256) if rejection.sha256 else None
    if twin is None:
        return rejection
    error = VerificationError(
        f"signature file damaged ({rejection.error.code}: {rejection.error.message}); the same "
        f"bundle was accepted from {twin.inbox_path.name}",
        path=rejection.inbox_path,
        code=Code.SIGNATURE_DAMAGED,
        hint="nothing to do for this round; remove the copy with the damaged .sig from the inbox",
    )
    return replace(rejection, error=error)
