"""The hub's test set for ``aggregate --eval DATA``: the sites' evaluation code, handed to
the hub kit as a :class:`hub_kit.hubeval.TestSetEvaluator` (the hub kit never imports the
site kit; this layer sits above both).

The test set is opened once, before the round touches its inbox: every record is indexed
and hashed (any format the sites read), so a missing folder, an unknown format or a label
outside the federation's classes fails before anything is staged. Its index digest and
record count name it in each claim; no record leaves this process. Each package is scored
from a second index, hashed again as it is read: a digest that differs from the checked one
(the data changed during the round) stops the round (``test-set-changed``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from flsilo import __version__ as flsilo_version
from flsilo.format import manifest as mf
from flsilo.plans.plan import Plan
from flsilo.plans.preprocessing import model_preprocess
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError, FlsiloError
from flsilo.scoring import metrics
from flsilo.signing import evalreport as er
from flsilo.signing.claims import HubEvaluation, claim_from_report
from flsilo.signing.trust import AllowedSigners
from flsilo.tasks import primary_metric
from hub_kit.hubeval import Unscored
from site_kit.data.samples import open_samples
from site_kit.package_eval import bootstrap_seed, evaluate_package
from site_kit.sitedata import data_spec


class HubTestSet:
    """A :class:`hub_kit.hubeval.TestSetEvaluator` over a folder or file the hub holds."""

    def __init__(self, data: Path, data_format: str | None = None, device: str = "auto") -> None:
        self.data = data
        self.data_format = data_format
        self.device = device
        self.digest: str | None = None
        self.records = 0
        self.plan: Plan | None = None

    def check(self, package: mf.Manifest) -> None:
        """Index and hash the test set for the package's model (refused as ``--eval`` when
        unusable)."""
        model = package.model
        try:
            with tempfile.TemporaryDirectory(prefix="flsilo-hub-eval-") as store:
                samples = open_samples(
                    self.data,
                    self.data_format,
                    model.classes,
                    model.input_shape,
                    data_spec(model),
                    preprocess=model_preprocess(package),
                    store=Path(store),
                    task=model.task_spec,
                )
        except FlsiloError as err:
            raise _as_test_set(err) from err
        self.data_format = samples.fmt
        self.plan = package.package.plan if package.package is not None else None
        self.digest = samples.index.digest
        self.records = len(samples.index)

    def __call__(self, package: Unscored, trust: AllowedSigners, data_sha256: str) -> HubEvaluation:
        """Verify ``package`` against the hub's trust, score it, and return the claim."""
        assert self.digest is not None, "check() the test set first"
        with tempfile.TemporaryDirectory(prefix="flsilo-hub-eval-") as store:
            try:
                scored = evaluate_package(
                    package.path,
                    self.data,
                    trust,
                    data_format=self.data_format,
                    device=self.device,
                    expected_kind=mf.KIND_PACKAGE,
                    store=Path(store),  # hashed again as it is scored: the claim names these
                    image=(package.data, package.signature),
                )
            except DataError as err:  # a record that only fails as it is decoded
                raise _as_test_set(err) from err
        if scored.data_digest != self.digest:
            raise DataError(
                "the hub's test set (--eval) changed while the round ran: the records scored "
                "are not the ones checked before it began",
                path=self.data,
                code=Code.TEST_SET_CHANGED,
            )
        manifest = scored.verified.manifest
        # the federation's plan (a final package carries none: the round's input package's)
        plan = (manifest.package.plan if manifest.package else None) or self.plan
        task = manifest.model.task_spec.name
        primary = primary_metric(task)
        classes = manifest.model.classes
        shared = er.shareable_figures(scored.figures, classes, plan, primary)
        return claim_from_report(  # what the sites' reports may carry, no more
            shared,
            task=task,
            primary=primary,
            values=er.shareable_values(dict(scored.result.values), shared, classes, plan, primary),
            loss=scored.result.loss,
            test_set_sha256=self.digest,
            test_set_records=self.records,
            data_format=str(self.data_format),
            data_sha256=data_sha256,
            skipped=scored.skipped,
            seed=bootstrap_seed(scored.verified.sha256),
            draws=metrics.BOOTSTRAP_DRAWS,
            software={"flsilo": flsilo_version},
        )


def _as_test_set(err: FlsiloError) -> FlsiloError:
    """The data layer's error said of the hub's test set: named as ``--eval``, and with a
    hint the hub can follow (``aggregate`` scores the whole set: it has no ``--skip-bad``)."""
    hint = err.hint.replace("--data", "--eval")
    if "--skip-bad" in hint:
        hint = (
            "fix or remove the bad records in the hub's test set: aggregate --eval scores "
            "every record (it has no --skip-bad)"
        )
    return type(err)(
        f"the hub's test set (--eval): {err.message}", path=err.path, code=err.code, hint=hint
    )
