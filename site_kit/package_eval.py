"""``flsilo evaluate``: verify a package (or bundle), then score it on labeled data."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsilo.format.artifact import Verified, verify_bytes, verify_file
from flsilo.plans.preprocessing import model_preprocess
from flsilo.signing.trust import TrustPolicy
from flsilo.tasks import task_for
from site_kit.data.samples import open_samples
from site_kit.data.stream import default_workers
from site_kit.evaluation import Evaluation, evaluate
from site_kit.packagemodel import verified_model
from site_kit.sitedata import data_spec
from site_kit.training import DistContext, pick_device


@dataclass(frozen=True)
class PackageEvaluation:
    """How a verified model scores on a data set, with the class names and records skipped."""

    classes: tuple[str, ...]
    skipped: int
    result: Evaluation
    verified: Verified
    figures: dict[str, Any]
    """``flsilo.scoring.metrics.classification_report``: per class sensitivity, specificity, PPV,
    NPV, F1, AUROC, AP with bootstrap intervals, balanced accuracy, ECE."""
    data_digest: str | None = None
    """The index digest of the records scored (each record's bytes hashed), with ``store``."""


def evaluate_package(
    package: Path,
    data: Path,
    trust: TrustPolicy,
    *,
    data_format: str | None = None,
    device: str = "auto",
    skip_bad: bool = False,
    workers: int | None = None,
    expected_kind: str | None = None,
    store: Path | None = None,
    image: tuple[bytes, bytes] | None = None,
) -> PackageEvaluation:
    """Verify ``package`` against ``trust`` (nothing unverified is loaded), then evaluate it.

    The data is indexed without hashing and read per batch, with the package's (or
    bundle's) preprocessing and never its augmentation. With ``store`` (a scratch folder)
    every record's bytes are hashed as they are indexed, and the result names the index's
    digest. With ``image`` (its bytes and signature, in memory: the hub's next package
    before its claim) ``package`` only names it and no file is read.
    """
    if image is None:
        buffer = io.BytesIO()
        verified = verify_file(package, trust, expected_kind=expected_kind, copy_to=buffer)
        raw = buffer.getvalue()
    else:
        raw, signature = image
        verified = verify_bytes(raw, signature, trust, source=package, expected_kind=expected_kind)
    model = verified_model(verified, raw, merged=True)
    info = verified.manifest.model
    m = verified.manifest
    preprocess = model_preprocess(m)
    dataset = open_samples(
        data,
        data_format,
        info.classes,
        info.input_shape,
        data_spec(info),
        skip_bad=skip_bad,
        preprocess=preprocess,
        store=store,
        task=info.task_spec,
    )
    result = evaluate(
        model,
        dataset,
        len(info.classes),
        pick_device(device, DistContext()),
        workers=default_workers() if workers is None else workers,
        task=task_for(info.task_spec),
        classes=info.classes,
        spec=info.task_spec,
        bootstrap_seed=bootstrap_seed(verified.sha256),
    )
    figures = result.figures or {}
    digest = dataset.index.digest if store is not None else None
    return PackageEvaluation(info.classes, dataset.skipped, result, verified, figures, digest)


def bootstrap_seed(package_sha256: str) -> int:
    """The bootstrap's seed: the same package gives the same intervals, wherever it is scored."""
    return int(package_sha256[:8], 16)
