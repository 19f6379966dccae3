"""Signed evaluation reports: one site's figures for one package, as canonical JSON + SSHSIG.

A site that evaluates a package on data it holds out writes ``rNNNN-SITE.eval.json`` and
its ``.sig`` (namespace ``flsilo-eval``) into its outbox; the hub verifies them against the
enrolled site keys, like bundles, and the model card reads only reports that verify. A
report holds figures only: no records, no per-sample scores; counts below the plan's
minimum cell size are withheld before it is written (``flsilo.scoring.metrics``).

The report's bytes are the one canonical JSON text ``encode`` writes (sorted keys, no
spaces, no NaN); a report is read back with the same strictness as a manifest: bounded
size, UTF-8, no duplicate keys, bounded depth, every required field of its type.
Stock tools check a report without flsilo::

    ssh-keygen -Y check-novalidate -n flsilo-eval -s R.eval.json.sig < R.eval.json
    ssh-keygen -Y find-principals -s R.eval.json.sig -f allowed_signers   # prints the site
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsilo.format.manifest import ID_PATTERN, iso_to_epoch
from flsilo.fs.untrusted import read_bounded
from flsilo.plans.plan import Plan, dp_of
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError, VerificationError
from flsilo.scoring.metrics import suppress_small_cells
from flsilo.signing.claims import FIGURE_KEY, PRIMARY, figure_key, is_figure
from flsilo.signing.sshsig import EVAL_NAMESPACE, check_signature, parse_signature, sign_digest
from flsilo.signing.trust import TrustPolicy

REPORT_KIND = "evaluation"
REPORT_VERSION = 1
MAX_REPORT_BYTES = 1 << 20
"""A report is figures only: 1 MiB holds hundreds of classes with intervals."""
MAX_SIG_BYTES = 64 * 1024
MAX_DEPTH = 8
SUFFIX = ".eval.json"
NAME = re.compile(r"^r(\d{4,})-([a-z0-9][a-z0-9._-]{0,62})\.eval\.json$")

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "format_version": int,
    "federation": str,
    "site": str,
    "round": int,
    "package": str,
    "package_sha256": str,
    "task": str,
    "created_at": str,
    "samples": int,
    "metrics": dict,
}


AGGREGATE_FIGURES = (
    "samples",
    "accuracy",
    "balanced_accuracy",
    "exact_match",
    "mean_auroc",
    "ece",
    "map50",
    "map",
)
"""The figures over the whole evaluation set: all a report (or a hub claim) carries in a DP
federation (and a plug-in task's primary figure, also one over the whole set)."""
PRIMARY_FIELD = "primary_metric"
"""The key of a plug-in task's primary figure, in its reports (a built-in's is known)."""
COUNTS = ("positives", "negatives", "objects")
"""A class's counts in a report's ``per_class`` row: one withheld (null) withholds the class."""


def shareable_figures(
    full: dict[str, Any], classes: tuple[str, ...] | list[str], plan: Plan | None, primary: str = ""
) -> dict[str, Any]:
    """The part of ``full`` (:func:`flsilo.scoring.metrics.classification_report` or a task's
    report) that may leave its holder, a site's report or the hub's claim alike: a task
    without classes (sequence) has only figures over the whole set; in a DP federation only
    :data:`AGGREGATE_FIGURES` and the task's ``primary`` figure (where it is one number);
    otherwise every count below the plan's ``min_cell_size`` withheld, and a flat figure of a
    withheld class (a plug-in's ``auroc.NAME``) with it."""
    if not classes:
        return dict(full)
    if plan is not None and dp_of(plan) is not None:
        return _whole_set(full, primary)
    shared = suppress_small_cells(full, plan.min_cell_size if plan is not None else 0)
    return _withhold_class_figures(shared, shared.get("per_class"))


def shareable_values(
    values: dict[str, float],
    shared: dict[str, Any],
    classes: tuple[str, ...] | list[str],
    plan: Plan | None,
    primary: str = "",
) -> dict[str, float | None]:
    """A task's flat figures (``Evaluation.values``, e.g. multilabel's ``auroc.NAME`` per
    finding) that may go with ``shared``, what :func:`shareable_figures` let out of the same
    evaluation: in a DP federation only the whole-set ones; otherwise a figure of a class
    ``shared`` withholds is null (``auroc.NAME`` would give back the AUROC its row withholds)."""
    if not classes:
        return dict(values)
    if plan is not None and dp_of(plan) is not None:
        return _whole_set(values, primary)
    return _withhold_class_figures(dict(values), shared.get("per_class"))


def _whole_set(figures: dict[str, Any], primary: str) -> dict[str, Any]:
    """:data:`AGGREGATE_FIGURES` and the ``primary`` figure where it is a number (or null):
    a plug-in naming a table (``per_class``) as its primary figure gets no table out."""
    return {
        k: figures[k]
        for k in (*AGGREGATE_FIGURES, primary)
        if k in figures and (k in AGGREGATE_FIGURES or _figure_or_null(figures[k]))
    }


def _figure_or_null(value: object) -> bool:
    return value is None or is_figure(value)


def _withhold_class_figures(figures: dict[str, Any], rows: object) -> dict[str, Any]:
    """``figures`` with each flat ``FIGURE.NAME`` (any key ending in ``.NAME``) of a class
    whose row in ``rows`` withholds a count (:data:`COUNTS`) null; the same object where
    there is none."""
    if not isinstance(rows, dict):
        return figures
    withheld = {
        name
        for name, row in rows.items()
        if isinstance(row, dict) and any(k in row and row[k] is None for k in COUNTS)
    }
    hidden = [k for k in figures if any(k.endswith(f".{name}") for name in withheld)]
    return figures | dict.fromkeys(hidden) if hidden else figures


def task_fields(task: str, primary: str) -> dict[str, str]:
    """What a report says of its task beside its name: a plug-in's primary figure (a
    built-in's is known by its name, and its reports keep their fields)."""
    return {} if task in PRIMARY else {PRIMARY_FIELD: primary}


def primary_figure(report: dict[str, Any]) -> str | None:
    """The key of the figure a verified report leads with
    (:func:`flsilo.signing.claims.figure_key`)."""
    return figure_key(str(report["task"]), report["metrics"], report.get(PRIMARY_FIELD))


def report_name(round_: int, site: str) -> str:
    """``r0003-site-a.eval.json``: the round of the package evaluated, and the site."""
    return f"r{round_:04d}-{site}{SUFFIX}"


def sig_of(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


def encode(report: dict[str, Any]) -> bytes:
    """The one canonical text of a report (what is hashed and signed)."""
    return (
        json.dumps(report, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
    ).encode("utf-8")


def sign(data: bytes, key: Any) -> bytes:
    """The armored ``.sig`` of a report's bytes, in namespace flsilo-eval."""
    return sign_digest(key, EVAL_NAMESPACE, hashlib.sha256(data).digest())


@dataclass(frozen=True)
class VerifiedReport:
    """A report whose signature verified and whose signer may speak for ``site``."""

    path: Path
    sha256: str
    report: dict[str, Any]
    signer_fingerprint: str

    @property
    def site(self) -> str:
        return str(self.report["site"])

    @property
    def round(self) -> int:
        return int(self.report["round"])

    @property
    def package_sha256(self) -> str:
        return str(self.report["package_sha256"])


def _bad(path: Path, why: str) -> MalformedInputError:
    return MalformedInputError(
        f"evaluation report is malformed ({why})",
        path=path,
        code=Code.EVAL_REPORT_MALFORMED,
        hint="reports are written by 'flsilo evaluate --report'; ask the site for a fresh copy",
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of JSON data, iteratively (no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > limit:
            return level
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def parse(data: bytes, path: Path) -> dict[str, Any]:
    """A report's fields, refused unless they are exactly what ``encode`` writes."""
    if data.count(b"[") + data.count(b"{") > 200_000:
        raise _bad(path, "too many nested values")
    try:
        report = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(path, str(exc)[:120]) from exc
    if not isinstance(report, dict):
        raise _bad(path, "not a JSON object")
    if _depth(report, MAX_DEPTH) > MAX_DEPTH:
        raise _bad(path, f"nested deeper than {MAX_DEPTH}")
    for name, kind in REQUIRED.items():
        value = report.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise _bad(path, f"field {name!r} is missing or not of its type")
    if report["kind"] != REPORT_KIND or report["format_version"] != REPORT_VERSION:
        raise MalformedInputError(
            f"not an evaluation report this flsilo reads (kind {report['kind']!r}, "
            f"version {report['format_version']!r})",
            path=path,
            code=Code.MANIFEST_VERSION,
            hint="it was written by a newer flsilo: upgrade flsilo to read it",
        )
    if not ID_PATTERN.match(report["site"]) or not re.fullmatch(
        r"[0-9a-f]{64}", report["package_sha256"]
    ):
        raise _bad(path, "site id or package digest is not valid")
    if PRIMARY_FIELD in report:
        _check_primary(report, path)
    try:
        iso_to_epoch(report["created_at"])
    except (ValueError, MalformedInputError) as exc:
        raise _bad(path, "created_at is not a UTC time") from exc
    if encode(report) != data:
        raise _bad(path, "not in canonical form")
    return report


def _check_primary(report: dict[str, Any], path: Path) -> None:
    """A plug-in task's ``primary_metric``: a figure's key, naming no table or text of the
    report's ``metrics``; a built-in task's report names none (its task's is known)."""
    named = report[PRIMARY_FIELD]
    if report["task"] in PRIMARY:
        raise _bad(path, f"a {report['task']} report has no field {PRIMARY_FIELD!r}")
    if not isinstance(named, str) or not FIGURE_KEY.fullmatch(named):
        raise _bad(path, f"field {PRIMARY_FIELD!r} is not a figure's key")
    if not _figure_or_null(report["metrics"].get(named)):
        raise _bad(path, f"field {PRIMARY_FIELD!r} names {named!r}, which is not a figure")


def verify_report(path: Path, trust: TrustPolicy) -> VerifiedReport:
    """Read ``path`` and its ``.sig`` (both bounded), check the signature in flsilo-eval and
    that the key may speak for the report's site; nothing unverified is returned."""
    data = read_bounded(path, MAX_REPORT_BYTES)
    sig = sig_of(path)
    if not sig.exists():
        raise VerificationError(
            f"{sig.name} is missing",
            path=path,
            code=Code.MISSING_SIGNATURE,
            hint="carry the report with its .sig, as written into the site's outbox",
        )
    signature = parse_signature(read_bounded(sig, MAX_SIG_BYTES), source=str(sig))
    digest = hashlib.sha256(data)
    check_signature(signature, EVAL_NAMESPACE, digest.digest(), source=str(path))
    report = parse(data, path)
    named = NAME.match(path.name)
    if named is None or (int(named.group(1)), named.group(2)) != (report["round"], report["site"]):
        raise VerificationError(
            f"file name does not match the report inside (round {report['round']}, "
            f"site {report['site']!r})",
            path=path,
            code=Code.EVAL_REPORT_MALFORMED,
            hint=f"the site writes it as {report_name(report['round'], report['site'])}; "
            "a renamed report is not accepted",
        )
    trust.check(
        report["site"],
        EVAL_NAMESPACE,
        signature.public_key,
        iso_to_epoch(report["created_at"]),
        source=str(path),
    )
    return VerifiedReport(path, digest.hexdigest(), report, signature.public_key.fingerprint)
