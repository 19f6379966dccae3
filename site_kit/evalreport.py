"""``flsilo evaluate --report``: a site's signed figures for a package, on data held out.

The figures are those of ``flsilo.scoring.metrics`` (per class sensitivity, specificity, PPV, NPV,
F1, AUROC, AP with seeded bootstrap intervals; ECE; the confusion matrix), with every count
below the plan's minimum cell size withheld; in a DP federation only the aggregate figures
(no per-class rows, no confusion matrix). Nothing about single records leaves the site.
The report is refused on the site's own training data: figures on data the model trained on
would overstate it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from flsilo import __version__ as flsilo_version
from flsilo.format.artifact import Verified
from flsilo.format.manifest import KIND_PACKAGE, now_utc
from flsilo.fs.atomic import WorkspaceLock, write_bytes
from flsilo.plans.plan import dp_of
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.scoring import metrics
from flsilo.signing import evalreport as er
from flsilo.signing.claims import PRIMARY
from flsilo.signing.keys import PassphraseSource
from site_kit import record as site_record
from site_kit.package_eval import bootstrap_seed, evaluate_package
from site_kit.round import unlock_site_key
from site_kit.workspace import SiteWorkspace


def training_paths(ws: SiteWorkspace) -> list[Path]:
    """Every data path this site trained on: site.toml's, and each one a run was given."""
    paths = [ws.data_path] if ws.data_path is not None else []
    for trained in site_record.of_kind(site_record.events(ws.root), site_record.Trained):
        given = trained.overrides.get("data")
        if isinstance(given, str):
            paths.append(Path(given))
    return paths


def same_data(ws: SiteWorkspace, data: Path) -> bool:
    """Whether ``data`` is data this site trained on: the same path, or the same bytes."""
    if not data.exists():
        return False
    known = [p for p in training_paths(ws) if p.exists()]
    if any(p.resolve() == data.resolve() for p in known):
        return True
    digest = _tree_digest(data)
    return any(_tree_digest(p) == digest for p in known)


def _tree_digest(path: Path) -> str:
    """sha256 over the bytes of a file, or the relative names and bytes of a folder's files
    (so a copy elsewhere or under another name has the same digest)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f != path:
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def build_report(
    ws: SiteWorkspace,
    package: Verified,
    full: dict[str, Any],
    *,
    skipped: int,
    primary: str = "",
) -> dict[str, Any]:
    """The report's fields: what was evaluated, by whom, and the figures the plan allows
    (``full`` is ``flsilo.scoring.metrics.classification_report`` of the package on the data,
    or the task's own figures; ``primary`` the task's primary metric, which a plug-in task's
    report names)."""
    manifest = package.manifest
    classes = manifest.model.classes
    task = manifest.model.task_spec.name
    assert manifest.package is not None
    # A final package carries no plan: the federation's own (federation.toml, from the
    # site's kit) then says what may leave the site, so a DP federation's report on its
    # final model still carries only the aggregate figures.
    plan = manifest.package.plan or ws.federation.plan
    min_cell = plan.min_cell_size if plan is not None else 0
    dp = plan is not None and dp_of(plan) is not None
    figures = er.shareable_figures(full, classes, plan, "" if task in PRIMARY else primary)
    return {
        "kind": er.REPORT_KIND,
        "format_version": er.REPORT_VERSION,
        "federation": manifest.federation,
        "site": ws.config.site_id,
        "round": manifest.round,
        "package": package.path.name,
        "package_sha256": package.sha256,
        "task": task,
        **er.task_fields(task, primary),
        "classes": list(classes),
        "created_at": now_utc(),
        "software": {"flsilo": flsilo_version},
        "samples": int(full["samples"]),
        "skipped": skipped,
        "min_cell_size": min_cell,
        "dp": dp,
        "bootstrap": {"draws": metrics.BOOTSTRAP_DRAWS, "seed": bootstrap_seed(package.sha256)},
        "metrics": figures,
    }


def write_report(ws: SiteWorkspace, report: dict[str, Any], key: Any) -> Path:
    """Write the report and its .sig into the outbox, atomically; never over another."""
    path = ws.outbox / er.report_name(int(report["round"]), ws.config.site_id)
    with WorkspaceLock(ws.root, "site workspace"):
        if path.exists():
            raise UsageError(
                "an evaluation report for this package is already in the outbox",
                path=path,
                code=Code.EXISTS,
                hint="carry it to the hub as it is, or move it away to evaluate again",
            )
        data = er.encode(report)
        write_bytes(er.sig_of(path), er.sign(data, key))
        write_bytes(path, data)  # last: a report without its .sig never appears alone
    return path


def report_package(
    site: Path,
    package: Path,
    data: Path,
    *,
    passphrase: PassphraseSource,
    data_format: str | None = None,
    device: str = "auto",
    skip_bad: bool = False,
    key_path: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Verify ``package`` with the site's trust, evaluate it on ``data`` (never the training
    data), sign the report with the site key and write it into the outbox."""
    ws = SiteWorkspace.open(site)
    if same_data(ws, data):
        raise UsageError(
            "this is the site's training data: a signed report on it would overstate the model",
            path=data,
            code=Code.EVAL_ON_TRAINING_DATA,
            hint="evaluate on data held out for evaluation (never trained on), or leave out "
            "--report",
        )
    key = unlock_site_key(ws, key_path, passphrase)  # before the work: a wrong key fails fast
    scored = evaluate_package(
        package,
        data,
        ws.trust(),
        data_format=data_format,
        device=device,
        skip_bad=skip_bad,
        expected_kind=KIND_PACKAGE,
    )
    from flsilo.tasks import primary_metric

    task = scored.verified.manifest.model.task_spec.name
    primary = primary_metric(task)
    full = scored.figures
    if task not in PRIMARY:  # a plug-in's flat figures (its primary one) where its own lack them
        full = {"samples": scored.result.samples, **scored.result.values} | full
    report = build_report(ws, scored.verified, full, skipped=scored.skipped, primary=primary)
    return write_report(ws, report, key), report
