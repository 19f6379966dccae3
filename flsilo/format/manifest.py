"""The versioned manifest inside every artifact's ``__metadata__``: schema, encoding, checks.

One serializer defines the bytes: canonical JSON (sorted keys, no spaces, finite floats)
stored under the single metadata key ``flsilo.manifest``. Parsing is strict: unknown,
missing or mistyped fields are refused with the field's path in the message.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flsilo import __version__
from flsilo.format.jsonable import SchemaError as SchemaError  # re-exported for their callers
from flsilo.format.jsonable import from_jsonable as from_jsonable
from flsilo.format.jsonable import to_jsonable as to_jsonable
from flsilo.format.startinfo import StartRecord
from flsilo.format.tensorfile import JsonDepthError, strict_json
from flsilo.plans.plan import (
    OMIT_DEFAULT,
    SEQUENCE,
    Plan,
    Schedule,
    TaskSpec,
    dp_of,
    plan_problem,
    schedule_problem,
    task_spec,
)
from flsilo.plans.preprocessing import Preprocess
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError
from flsilo.signing.claims import HubEvaluation, claim_fields_problem

MANIFEST_KEY = "flsilo.manifest"
FORMAT_VERSION = 3  # bumped once for wave 3 (issue 20); see docs/reference/artifact-format.md
READ_VERSIONS = (2, 3)
"""Versions this flsilo reads: version 2 files stay verifiable, inspectable and replayable."""
UPGRADE_HINT = "it was written by a newer flsilo: upgrade flsilo to read it"
V3_PLAN_FIELDS = ("preprocess", "augment")
"""Plan fields new in version 3; a version-2 manifest that holds one is malformed."""
KIND_BUNDLE = "bundle"
KIND_PACKAGE = "package"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
ISO_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@dataclass(frozen=True)
class ModelInfo:
    """Which model the tensors belong to, pinned by the digest of its code."""

    spec: str
    code_digest: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    label_column: str = "label"
    feature_columns: tuple[str, ...] = ()
    head: tuple[str, ...] = ()
    """State-dict names of the head (the last linear layer), weight first."""
    task: TaskSpec | None = field(default=None, metadata=OMIT_DEFAULT)
    """What the outputs mean (None, and absent from the file: classify); equal to the plan's."""
    adapters: str = field(default="", metadata=OMIT_DEFAULT)
    """The plan's ``--adapters`` (every package, the final one too: export merges them)."""
    start: StartRecord | None = field(default=None, metadata=OMIT_DEFAULT)
    """``hub init --init-weights``: the ``backbone import`` record of the start file."""

    @property
    def task_spec(self) -> TaskSpec:
        return self.task or TaskSpec()


@dataclass(frozen=True)
class Metrics:
    """Loss and accuracy of one model on one site's validation split, and the task's own
    figures (``values``: its primary metric and others, e.g. ``mean_auroc`` and
    ``auroc.FINDING`` for multilabel; left out for classify, whose figure is ``accuracy``)."""

    loss: float
    accuracy: float
    samples: int
    values: dict[str, float] = field(default_factory=dict, metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class DPReport:
    """What DP-SGD a site ran in one round, and the privacy it has spent up to and with it."""

    accountant: str
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_round: float
    epsilon_total: float
    rounds: int


@dataclass(frozen=True)
class InputSummary:
    """A site's inputs after scaling, before normalisation and augmentation: what
    ``hub_kit.drift`` compares (site_kit.inputsummary; bins under the cell size are None)."""

    samples: int
    channel_mean: tuple[float, ...]
    channel_std: tuple[float, ...]
    brightness: tuple[int | None, ...] = ()
    sizes: tuple[int | None, ...] = ()
    bad_share: float = 0.0


@dataclass(frozen=True)
class BundleInfo:
    """What a site reports about the training it did."""

    site: str
    base_package_sha256: str
    num_samples: int
    plan: Plan
    metrics_global: Metrics | None
    metrics_trained: Metrics | None
    timings: dict[str, float] = field(default_factory=dict)
    skipped_samples: int = 0
    world_size: int = 1
    dp: DPReport | None = None
    reveals: tuple[str, ...] = ()
    """What a statistics bundle discloses about the site's data, in words."""
    fisher: tuple[str, ...] = ()
    """Parameters whose diagonal Fisher the bundle carries as extra ``fisher.NAME`` tensors."""
    expired_package_accepted: str | None = None
    """When the site's operator trained on an expired package on purpose: the time they did."""
    inputs: InputSummary | None = None
    """A summary of the inputs trained on (format 3; None in DP federations and before)."""


@dataclass(frozen=True)
class ProvenanceInput:
    site: str
    sha256: str
    samples: int
    weight: float
    round: int


@dataclass(frozen=True)
class ProvenanceReject:
    site: str
    sha256: str
    reason: str


@dataclass(frozen=True)
class ServerStep:
    """The hub's server optimizer step of a round and the state files it read and wrote."""

    optimizer: str
    params: dict[str, float]
    state_in_sha256: str | None
    state_out_sha256: str
    state_file: str


@dataclass(frozen=True)
class Provenance:
    """Where an aggregated package came from."""

    strategy: str
    strategy_params: dict[str, float]
    inputs: tuple[ProvenanceInput, ...]
    rejects: tuple[ProvenanceReject, ...]
    merge: str = "average"
    server: ServerStep | None = None


@dataclass(frozen=True)
class ReleaseOfficer:
    """A release officer enrolled at the hub: id and OpenSSH public key line."""

    id: str
    key: str


@dataclass(frozen=True)
class ReleasePolicy:
    """m-of-n release sign-off: the officers' keys and how many must sign the final package."""

    signers_required: int
    officers: tuple[ReleaseOfficer, ...]


@dataclass(frozen=True)
class KeyRotation:
    """A hub key rotation statement (canonical JSON) signed by the old and the new key."""

    statement: str
    old_signature: str
    new_signature: str


@dataclass(frozen=True)
class PackageInfo:
    """What the hub says about a package: the plan for its round and where it came from."""

    schedule: Schedule
    final: bool
    plan: Plan | None
    parent_sha256: str | None
    provenance: Provenance | None
    expires_at: str | None = None
    """Sites refuse to train on the package after this time (never set on a final package)."""
    release: ReleasePolicy | None = None
    key_chain: tuple[KeyRotation, ...] = ()
    """Every hub key rotation so far, oldest first (sites follow it from the key they confirmed)."""
    preprocess: Preprocess | None = None
    """The preprocessing the package's model expects (version 3; the plan's, with any
    federation statistics): set on every package, the final one included, so the model is
    evaluated, exported and deployed on inputs made as in training. Null in version 2."""
    log_head: str | None = None
    """sha256 of the hub's event log head just before the commit that records this package.

    A commit appends its events in one atomic step (a round: its accept and reject lines,
    then the aggregate line naming this package), so the first commit event after the
    recorded head is the one that names this package."""
    hub_evaluation: HubEvaluation | None = field(default=None, metadata=OMIT_DEFAULT)
    """``aggregate --eval``: the hub's figures on its own test set (``flsilo.signing.claims``)."""


@dataclass(frozen=True)
class Manifest:
    kind: str
    format_version: int
    federation: str
    round: int
    created_at: str
    software: dict[str, str]
    model: ModelInfo
    bundle: BundleInfo | None = None
    package: PackageInfo | None = None

    @property
    def principal(self) -> str:
        """Who must have signed this artifact: the site for a bundle, the hub for a package."""
        from flsilo.signing.trust import HUB_PRINCIPAL

        return self.bundle.site if self.bundle else HUB_PRINCIPAL

    @property
    def namespace(self) -> str:
        from flsilo.signing.sshsig import BUNDLE_NAMESPACE, PACKAGE_NAMESPACE

        return BUNDLE_NAMESPACE if self.kind == KIND_BUNDLE else PACKAGE_NAMESPACE


# ---------------------------------------------------------------------------------------
# Encoding (to_jsonable, from_jsonable: flsilo.format.jsonable)


def encode(manifest: Manifest) -> str:
    """The one canonical text of a manifest."""
    check_semantics(manifest, source="manifest")
    return json.dumps(to_jsonable(manifest), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _bad_manifest(source: str, why: str, code: Code = Code.BAD_MANIFEST) -> MalformedInputError:
    return MalformedInputError(
        f"manifest is not valid: {why}",
        path=source,
        code=code,
        hint="this file was not written by a compatible flsilo, or was altered; "
        "get a fresh copy from its signer",
    )


def decode(metadata: dict[str, str], source: str) -> Manifest:
    """Read the manifest from a checked header's metadata."""
    if MANIFEST_KEY not in metadata:
        raise _bad_manifest(source, f"no {MANIFEST_KEY!r} entry in __metadata__", Code.NO_MANIFEST)
    extra = set(metadata) - {MANIFEST_KEY}
    if extra:
        raise _bad_manifest(
            source, f"unexpected metadata key {sorted(extra)[0]!r}", Code.EXTRA_METADATA
        )
    try:
        data = strict_json(metadata[MANIFEST_KEY])
    except JsonDepthError as exc:
        raise _bad_manifest(source, f"manifest is {exc}", Code.TOO_DEEP) from exc
    except ValueError as exc:
        raise _bad_manifest(source, f"not valid JSON ({exc})") from exc
    if isinstance(data, dict):
        _check_version(data, source)
    try:
        manifest: Manifest = from_jsonable(Manifest, data)
    except SchemaError as exc:
        raise _bad_manifest(source, str(exc)) from exc
    check_semantics(manifest, source)
    return manifest


def version_refusal(version: object, what: str) -> tuple[str, str] | None:
    """Why a file of format ``version`` cannot be read, and the hint; None when it can."""
    if isinstance(version, int) and not isinstance(version, bool) and version in READ_VERSIONS:
        return None
    reads = " and ".join(str(v) for v in READ_VERSIONS)
    why = f"{what} format version {version!r} is not supported (this flsilo reads {reads})"
    newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
    if newer:
        return why, UPGRADE_HINT
    return why, "it was written by an older flsilo release; regenerate it with this one"


def _check_version(data: dict[str, Any], source: str) -> None:
    refusal = version_refusal(data.get("format_version"), "manifest")
    if refusal is not None:
        why, hint = refusal
        raise MalformedInputError(
            f"manifest is not valid: {why}", path=source, code=Code.MANIFEST_VERSION, hint=hint
        )
    if data.get("format_version") == 2:
        for part in ("bundle", "package"):
            found = data.get(part)
            info: dict[str, Any] = found if isinstance(found, dict) else {}
            plan = info.get("plan")
            if (isinstance(plan, dict) and any(k in plan for k in V3_PLAN_FIELDS)) or (
                "preprocess" in info
            ):
                raise _bad_manifest(source, f"a version-2 {part} plan holds version-3 fields")


def check_semantics(m: Manifest, source: str) -> None:
    """Rules the types alone do not express."""
    problem = _manifest_problem(m)
    if problem is None and m.bundle is not None:
        problem = _bundle_problem(m.bundle)
    if problem is None and m.package is not None:
        problem = _package_problem(m.package, m.round)
    if problem is not None:
        raise _bad_manifest(source, problem)


def _manifest_problem(m: Manifest) -> str | None:
    if m.kind not in (KIND_BUNDLE, KIND_PACKAGE):
        return f"kind {m.kind!r} is neither 'bundle' nor 'package'"
    if (m.kind == KIND_BUNDLE) != (m.bundle is not None) or (m.kind == KIND_PACKAGE) != (
        m.package is not None
    ):
        return f"a {m.kind} must carry exactly the {m.kind} section"
    if not ID_PATTERN.match(m.federation):
        return f"federation id {m.federation!r} is not a valid id"
    if m.round < 0:
        return "round is negative"
    if not _is_utc_time(m.created_at):
        return f"created_at {m.created_at[:40]!r} is not a UTC time like 2026-11-22T09:30:00Z"
    classes = m.model.classes
    if m.model.task_spec.name == SEQUENCE:  # the charset names the outputs
        if classes:
            return "a sequence model has no class list"
    elif not classes or len(set(classes)) != len(classes):
        return "class list is empty or has duplicates"
    if not m.model.input_shape or any(d <= 0 for d in m.model.input_shape):
        return "input shape must be positive"
    if m.model.task is not None and m.model.task == TaskSpec():
        return "the model's task is classify, which is written by leaving it out"
    plan = m.bundle.plan if m.bundle else m.package.plan if m.package else None
    if plan is not None and task_spec(plan) != m.model.task_spec:
        return "the plan's task differs from the model's"
    if plan is not None and plan.adapters != m.model.adapters:  # a site may refuse them
        return "the plan's adapters differ from the model's"
    return None


def _bundle_problem(b: BundleInfo) -> str | None:
    if not ID_PATTERN.match(b.site):
        return f"site id {b.site!r} is not a valid id"
    if not SHA256_PATTERN.match(b.base_package_sha256):
        return "base_package_sha256 is not a sha256 hex digest"
    if b.num_samples <= 0:
        return "num_samples must be positive"
    if (dp_of(b.plan) is None) != (b.dp is None):
        return "a bundle reports DP spending exactly when its plan declares DP"
    return plan_problem(b.plan)


def _package_problem(p: PackageInfo, round_: int) -> str | None:
    if not p.final and p.plan is None:
        return "a package that is not final must carry a plan"
    if p.plan is not None and p.preprocess is not None and p.preprocess != p.plan.preprocess:
        return "a package's preprocess differs from its plan's"
    if p.parent_sha256 is not None and not SHA256_PATTERN.match(p.parent_sha256):
        return "parent_sha256 is not a sha256 hex digest"
    if (round_ == 0) != (p.parent_sha256 is None):
        return "only round 0 has no parent package"
    return (
        schedule_problem(p.schedule)
        or (plan_problem(p.plan) if p.plan else None)
        or _history_problem(p)
        or (claim_fields_problem(p.hub_evaluation) if p.hub_evaluation else None)
    )


def _history_problem(p: PackageInfo) -> str | None:
    """Expiry, log anchor and release policy (issue 12)."""
    if p.expires_at is not None and (p.final or not ISO_PATTERN.match(p.expires_at)):
        return "expires_at must be a UTC time YYYY-MM-DDTHH:MM:SSZ, on a non-final package"
    if p.log_head is not None and not SHA256_PATTERN.match(p.log_head):
        return "log_head is not a sha256 hex digest"
    if p.release is not None:
        ids = [o.id for o in p.release.officers]
        if len(set(ids)) != len(ids) or not all(ID_PATTERN.match(i) for i in ids):
            return "release officer ids must be valid and distinct"
        if p.release.signers_required < 1:
            return "release needs at least one signer"
    return None


# ---------------------------------------------------------------------------------------
# Helpers for writers


def now_utc() -> str:
    """Creation time; honours SOURCE_DATE_EPOCH so reruns can be bit-identical."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (
        datetime.fromtimestamp(int(epoch), UTC) if epoch and epoch.isdigit() else datetime.now(UTC)
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_utc_time(text: str) -> bool:
    try:
        return len(text) == 20 and iso_to_epoch(text) >= 0
    except ValueError:
        return False


_ISO_FIELDS = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def iso_to_epoch(text: str) -> int:
    """Inverse of now_utc()."""
    found = _ISO_FIELDS.fullmatch(text) if isinstance(text, str) else None
    if found is not None:  # the usual case, without strptime's general parser
        year, month, day, hour, minute, second = map(int, found.groups())
        if hour < 24 and minute < 60 and second < 60:
            with contextlib.suppress(ValueError):  # strptime then says what is wrong
                return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def epoch_to_iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def software_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    versions = {"flsilo": __version__, "python": platform.python_version()}
    versions.update(extra or {})
    return versions


def artifact_name(federation: str, round_: int, site: str | None = None) -> str:
    base = f"{federation}-r{round_:04d}"
    return f"{base}-{site}.safetensors" if site else f"{base}.safetensors"
