"""``flsilo evaluate``: verify a package (or bundle), then score it on labeled data."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from flsilo.artifact import verify_file
from flsilo.trust import TrustPolicy
from site_kit.data import load_dataset
from site_kit.evaluation import Evaluation, evaluate
from site_kit.round import data_spec, verified_model
from site_kit.training import DistContext, pick_device


@dataclass(frozen=True)
class PackageEvaluation:
    """How a verified model scores on a data set, with the class names and records skipped."""

    classes: tuple[str, ...]
    skipped: int
    result: Evaluation


def evaluate_package(
    package: Path,
    data: Path,
    trust: TrustPolicy,
    *,
    data_format: str | None = None,
    device: str = "auto",
    skip_bad: bool = False,
) -> PackageEvaluation:
    """Verify ``package`` against ``trust`` (nothing unverified is loaded), then evaluate it."""
    buffer = io.BytesIO()
    verified = verify_file(package, trust, copy_to=buffer)
    model = verified_model(verified, buffer.getvalue())
    info = verified.manifest.model
    dataset = load_dataset(
        data, data_format, info.classes, info.input_shape, data_spec(info), skip_bad=skip_bad
    )
    result = evaluate(model, dataset, len(info.classes), pick_device(device, DistContext()))
    return PackageEvaluation(info.classes, dataset.skipped, result)
