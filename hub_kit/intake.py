"""Intake gates: verify each inbox bundle while copying it into staging, then apply hub policy.

A bundle is read once: hashed, checked and copied in the same pass, so what is later
aggregated and archived is byte for byte what was verified, whatever happens to the inbox
(a USB stick, say) afterwards. Inbox files are never modified or removed; rejects are
*copied* to quarantine with a reason file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from flsilo import manifest as mf
from flsilo.artifact import Verified, sha256_file, sig_path, verify_file
from flsilo.atomic import atomic_writer, copy_file, write_text
from flsilo.errors import FlsiloError, PolicyError
from flsilo.federation import FederationConfig
from flsilo.tensorfile import FLOAT_DTYPES, Header
from flsilo.tensorsets import (
    ROUND_STATISTICS,
    ROUND_TRAIN,
    STAT_CLASS_COUNTS,
    expected_specs,
    layout_of,
)
from flsilo.trust import AllowedSigners
from hub_kit.privacy import check_bundle as check_dp_bundle
from hub_kit.streaming import FISHER_PREFIX
from hub_kit.workspace import HubState


@dataclass(frozen=True)
class Candidate:
    """A verified bundle that passed every gate, staged inside the hub workspace."""

    inbox_path: Path
    staged: Path
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
    inbox_path: Path
    site: str
    sha256: str
    error: FlsiloError


@dataclass(frozen=True)
class Skipped:
    inbox_path: Path
    sha256: str
    why: str


@dataclass
class IntakeResult:
    candidates: list[Candidate]
    rejections: list[Rejection]
    skipped: list[Skipped]


def check_policy(
    verified: Verified,
    config: FederationConfig,
    state: HubState,
    package_header: Header,
    package_model: mf.ModelInfo,
    package_plan: mf.Plan | None = None,
) -> int:
    """Raise PolicyError unless the hub may accept this bundle now; return its age in rounds.

    ``fisher``: the round's plan merges by Fisher, so the bundle must also carry exactly one
    F32 ``fisher.NAME`` tensor, shaped like NAME, for each float parameter it declares.
    """
    m = verified.manifest
    b = m.bundle
    assert b is not None
    path = verified.path

    def refuse(code: str, message: str, hint: str) -> PolicyError:
        return PolicyError(message, path=path, code=code, hint=hint)

    if m.federation != config.federation:
        raise refuse(
            "wrong-federation",
            f"bundle is for federation {m.federation!r}, this hub runs {config.federation!r}",
            "it was carried to the wrong hub",
        )
    age = state.round - m.round
    if age < 0:
        raise refuse(
            "future-round",
            f"bundle claims round {m.round}, the hub is at round {state.round}",
            "no package for that round was ever issued; treat the file as forged",
        )
    if age > config.hub.max_staleness:
        raise refuse(
            "stale",
            f"late bundle: trained on round {m.round}'s package, the hub is at round {state.round}",
            "send the site the current package and ask it to train again"
            + ("" if config.hub.max_staleness else " (or declare a staleness policy at hub init)"),
        )
    if b.base_package_sha256 != state.packages.get(m.round):
        raise refuse(
            "wrong-base",
            f"bundle was trained on package {b.base_package_sha256[:12]}…, not on the one this "
            f"hub issued for round {m.round}",
            "the site trained on a package that did not come from this hub",
        )
    if m.model != package_model:
        raise refuse(
            "wrong-model",
            "bundle's model description differs from the package's",
            "the site used another model or class list",
        )
    check_tensor_set(verified, package_header, package_model, package_plan or b.plan, refuse)
    if not 0 < b.num_samples <= config.hub.max_samples:
        raise refuse(
            "sample-count",
            f"bundle claims {b.num_samples} samples; the cap is {config.hub.max_samples}",
            "raise max_samples in federation.toml if the site really has that much data",
        )
    check_dp_bundle(verified, config)
    return age


def check_tensor_set(
    verified: Verified,
    package_header: Header,
    package_model: mf.ModelInfo,
    plan: mf.Plan,
    refuse: Callable[[str, str, str], PolicyError],
) -> None:
    """The bundle holds exactly the tensors the round's plan asks for (whole, partial, statistics).

    The plan is the hub's (from the round's package), never the one the bundle claims.
    """
    specs = expected_specs(
        package_header, package_model.head, plan.kind, plan.freeze, plan.head_solver
    )
    if plan.merge == "fisher" and plan.kind == ROUND_TRAIN:
        assert verified.manifest.bundle is not None
        problem = fisher_layout_problem(
            verified.scan.header, specs, verified.manifest.bundle.fisher
        )
        if problem:
            raise refuse(
                "wrong-fisher",
                f"bundle's Fisher tensors do not fit this round's plan: {problem}",
                "the round merges by Fisher: the site must train with a flsilo that ships "
                "fisher.NAME tensors (and no others)",
            )
        return
    expected = tuple(t.signature() for t in layout_of(specs))
    if verified.scan.header.layout() != expected:
        what = {
            ROUND_STATISTICS: "the head statistics this statistics round asks for",
            ROUND_TRAIN: "the package's trainable tensors" if plan.freeze else "the package's",
        }[plan.kind]
        raise refuse(
            "wrong-tensors",
            f"bundle's tensor names, dtypes, shapes or layout differ from {what}",
            "the site trained a different model or followed another plan; it cannot be combined",
        )
    if plan.kind == ROUND_STATISTICS:
        check_statistics(verified, plan, refuse)


def check_statistics(
    verified: Verified, plan: mf.Plan, refuse: Callable[[str, str, str], PolicyError]
) -> None:
    """Class counts are whole, sum to num_samples, and respect the plan's minimum cell size."""
    info = next(t for t in verified.scan.header.tensors if t.name == STAT_CLASS_COUNTS)
    with verified.path.open("rb") as fh:
        fh.seek(verified.scan.header.data_start + info.begin)
        counts = np.frombuffer(fh.read(info.nbytes), dtype="<f8")
    b = verified.manifest.bundle
    assert b is not None
    if np.any(counts < 0) or np.any(counts != np.round(counts)) or counts.sum() != b.num_samples:
        raise refuse(
            "bad-statistics",
            f"class counts do not add up to the {b.num_samples} samples the bundle claims",
            "the bundle was not made by 'flsilo train'; ask the site to run it again",
        )
    small = [int(c) for c in counts if 0 < c < plan.min_cell_size]
    if small:
        raise refuse(
            "cell-too-small",
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


def _claimed_site(path: Path) -> str:
    """Best-effort site id for a report about a file that did not verify."""
    parts = path.name.removesuffix(".safetensors").split("-r")
    tail = parts[-1] if len(parts) > 1 else ""
    return tail.split("-", 1)[1] if "-" in tail else "?"


def intake(
    inbox: Path,
    staging: Path,
    config: FederationConfig,
    state: HubState,
    trust: AllowedSigners,
    package_header: Header,
    package_model: mf.ModelInfo,
    package_plan: mf.Plan | None = None,
) -> IntakeResult:
    result = IntakeResult([], [], [])
    staging.mkdir(parents=True, exist_ok=True)
    for path in sorted(inbox.glob("*.safetensors")):
        staged = staging / path.name
        try:
            with atomic_writer(staged) as out:
                verified = verify_file(path, trust, expected_kind=mf.KIND_BUNDLE, copy_to=out)
                if verified.sha256 in state.accepted:
                    raise _AlreadyUsed(verified.sha256)
                age = check_policy(
                    verified, config, state, package_header, package_model, package_plan
                )
            copy_file(sig_path(path), sig_path(staged))
        except _AlreadyUsed as used:
            result.skipped.append(
                Skipped(path, used.sha, f"already aggregated in round {state.accepted[used.sha]}")
            )
            continue
        except FlsiloError as err:
            sha = sha256_file(path) if path.is_file() else ""
            if sha in state.accepted:
                result.skipped.append(
                    Skipped(path, sha, f"already aggregated in round {state.accepted[sha]}")
                )
                continue
            site = _claimed_site(path)
            result.rejections.append(Rejection(path, site, sha, err))
            continue
        weight = verified.manifest.bundle.num_samples * config.hub.staleness_discount**age  # type: ignore[union-attr]
        bundle = verified.manifest.bundle
        assert bundle is not None
        weight = bundle.num_samples * config.hub.staleness_discount**age
        staged_verified = replace(verified, scan=replace(verified.scan, path=staged))
        result.candidates.append(Candidate(path, staged, staged_verified, age, weight))
    return _resolve_duplicates(result)


class _AlreadyUsed(Exception):
    def __init__(self, sha: str) -> None:
        self.sha = sha


def _resolve_duplicates(result: IntakeResult) -> IntakeResult:
    """One bundle per site per round: identical copies collapse, conflicting ones are refused."""
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
                    Skipped(extra.inbox_path, extra.verified.sha256, "identical copy")
                )
                extra.staged.unlink(missing_ok=True)
                sig_path(extra.staged).unlink(missing_ok=True)
            continue
        names = ", ".join(c.inbox_path.name for c in group)
        for c in group:
            result.rejections.append(
                Rejection(
                    c.inbox_path,
                    site,
                    c.verified.sha256,
                    PolicyError(
                        f"site {site!r} sent {len(shas)} different bundles for this round ({names})",
                        path=c.inbox_path,
                        code="conflicting-duplicate",
                        hint="ask the site which one is real; remove the others from the inbox and rerun",
                    ),
                )
            )
            c.staged.unlink(missing_ok=True)
            sig_path(c.staged).unlink(missing_ok=True)
    result.candidates = kept
    return result


def quarantine(rejection: Rejection, directory: Path, round_: int) -> Path:
    """Copy a rejected file (and its .sig) aside with a reason file; the original stays put."""
    stem = f"{rejection.sha256[:12] or 'unreadable'}-{rejection.inbox_path.name}"
    target = directory / f"r{round_:04d}" / stem
    if rejection.inbox_path.is_file() and not target.exists():
        copy_file(rejection.inbox_path, target)
    sig = sig_path(rejection.inbox_path)
    if sig.is_file() and not sig_path(target).exists():
        copy_file(sig, sig_path(target))
    reason = {
        "round": round_,
        "file": rejection.inbox_path.name,
        "site": rejection.site,
        "sha256": rejection.sha256,
        **rejection.error.to_dict(),
        "time": mf.now_utc(),
    }
    write_text(target.with_name(target.name + ".reason.txt"), json.dumps(reason, indent=2) + "\n")
    return target
