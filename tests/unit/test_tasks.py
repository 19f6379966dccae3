"""The task protocol's registry, the plan's task fields and how manifests carry them."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flsilo.format import manifest as mf
from flsilo.plans import federation as fed
from flsilo.plans.federation import FederationConfig, HubPolicy
from flsilo.plans.plan import Plan, TaskSpec, parse_schedule, plan_problem, task_spec
from flsilo.runtime.errors import FlsiloError
from flsilo.tasks import LabelError, Target, load_task
from flsilo.tasks.classify import TASK as CLASSIFY


def test_classify_parses_names_and_refuses_others() -> None:
    classes = ("cat", "dog")
    assert CLASSIFY.parse([" dog "], TaskSpec(), classes) == Target(1)
    with pytest.raises(LabelError, match="'cow' is not a class"):
        CLASSIFY.parse(["cow"], TaskSpec(), classes)
    assert CLASSIFY.counts(np.array([0, 1, 1]), classes) == [1, 2]
    assert CLASSIFY.target_matrix(np.array([1, 0]), 2).tolist() == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"task": "regress"}, "not one of classify"),
        ({"task": "pkg.mod"}, "plug-in"),
        ({"thresholds": (0.5,)}, "multilabel task only"),
        ({"task": "multilabel", "thresholds": (0.5, 1.0)}, "strictly between 0 and 1"),
        ({"charset": "ABA"}, "lists 'A' more than once"),
        ({"max_length": -1}, "negative"),
    ],
)
def test_the_plan_refuses_bad_task_fields(changes: dict[str, object], why: str) -> None:
    problem = plan_problem(Plan(local_epochs=1, batch_size=1, **changes))  # type: ignore[arg-type]
    assert problem is not None and why in problem


def test_a_plugin_name_passes_the_plan_rules() -> None:
    assert plan_problem(Plan(1, 1, task="my_pkg.tasks:Regress")) is None


def test_an_unknown_task_is_one_line_with_a_code_and_a_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(FlsiloError) as err:
        load_task("no_such_package.tasks:TASK")
    assert err.value.code == "unknown-task" and err.value.exit_code == 1
    assert "no_such_package" in err.value.message and "install" in err.value.hint
    monkeypatch.setitem(sys.modules, "tests.plugin_task", None)  # not importable here
    monkeypatch.setattr("flsilo.tasks._loaded", {})
    with pytest.raises(FlsiloError, match="cannot be imported"):
        load_task("tests.plugin_task:TASK")


def test_a_plugin_loads_and_names_itself() -> None:
    task = load_task("tests.plugin_task:TASK")
    assert task.name == "tests.plugin_task:TASK" and task.closed_form
    with pytest.raises(FlsiloError, match="no Task object named 'nope'"):
        load_task("tests.plugin_task:nope")


@pytest.mark.parametrize("named", ["top 1", "", "f1é", 3])
def test_a_plugin_whose_primary_metric_is_no_figure_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, named: object
) -> None:
    """Its reports and the hub's claims name that key, and their readers would refuse them
    (the site would sign reports no hub reads): the task is refused where it is loaded."""
    import types

    from flsilo.tasks.classify import Classify

    module = types.ModuleType("bad_metric_task")
    module.TASK = type("Bad", (Classify,), {"primary_metric": named})()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bad_metric_task", module)
    monkeypatch.setattr("flsilo.tasks._loaded", {})
    with pytest.raises(FlsiloError) as err:
        load_task("bad_metric_task:TASK")
    assert err.value.code == "unknown-task" and "primary_metric" in err.value.message
    assert "Evaluation.values" in (err.value.hint or "")


def _config(plan: Plan) -> FederationConfig:
    return FederationConfig(
        federation="fed",
        model="logreg",
        classes=("a", "b"),
        input_shape=(4,),
        schedule=parse_schedule("periodic:2", (1,)),
        plan=plan,
        hub=HubPolicy(min_sites=1),
    )


def test_classify_is_left_out_of_files_and_other_tasks_are_written(tmp_path: Path) -> None:
    plain = _config(Plan(local_epochs=1, batch_size=8))
    fed.write(tmp_path / "a.toml", plain)
    assert "task" not in (tmp_path / "a.toml").read_text()
    assert "task" not in mf.to_jsonable(plain.plan)
    other = _config(Plan(1, 8, task="multilabel", thresholds=(0.3, 0.7)))
    fed.write(tmp_path / "b.toml", other)
    text = (tmp_path / "b.toml").read_text()
    assert 'task = "multilabel"' in text and "thresholds = [0.3, 0.7]" in text
    assert fed.load(tmp_path / "b.toml") == other
    assert task_spec(other.plan) == TaskSpec("multilabel", (0.3, 0.7))


def _manifest(plan: Plan, task: TaskSpec | None) -> mf.Manifest:
    model = mf.ModelInfo("logreg", "0" * 64, ("a", "b"), (4,), task=task)
    info = mf.PackageInfo(parse_schedule("periodic:1", (1,)), False, plan, None, None)
    return mf.Manifest("package", 3, "fed", 0, "2026-12-07T10:00:00Z", {}, model, package=info)


def test_a_manifest_without_a_task_means_classify_and_the_model_must_agree() -> None:
    plan = Plan(1, 8)
    text = mf.encode(_manifest(plan, None))
    assert '"task"' not in text
    decoded = mf.decode({mf.MANIFEST_KEY: text}, "p")
    assert decoded.model.task_spec == TaskSpec() and decoded.package.plan.task == "classify"  # type: ignore[union-attr]
    multi = replace(plan, task="multilabel")
    assert '"task":"multilabel"' in mf.encode(_manifest(multi, TaskSpec("multilabel")))
    with pytest.raises(FlsiloError, match="task differs"):
        mf.encode(_manifest(multi, None))
    with pytest.raises(FlsiloError, match="written by leaving it out"):
        mf.encode(_manifest(plan, TaskSpec()))


def test_multilabel_parses_one_bit_per_finding() -> None:
    task = load_task("multilabel")
    findings = ("a", "b", "c")
    target = task.parse(["1", " 0", "true"], TaskSpec("multilabel"), findings)
    assert target == Target(-1, "101")
    assert task.decode(target).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(LabelError, match="finding 'b' is '2', not 0 or 1"):
        task.parse(["1", "2", "0"], TaskSpec("multilabel"), findings)
    assert task.counts(np.array([[1, 0, 1], [1, 1, 0]]), findings) == [2, 1, 1]
    assert task.label_columns(TaskSpec("multilabel"), findings) == findings
    assert "2 thresholds for 3 findings" in str(
        task.spec_problem(TaskSpec("multilabel", (0.5, 0.5)), findings)
    )


def test_multilabel_loss_sums_findings_per_sample_and_evaluates_per_finding() -> None:
    import torch

    from flsilo.scoring.metrics import auroc

    task = load_task("multilabel")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(40, 3)
    y = task.collate([np.array([float(v > 0), float(w > 0)]) for v, w in x[:, :2].tolist()])
    per_sample = torch.nn.functional.binary_cross_entropy_with_logits(
        model(x), y, reduction="none"
    ).sum(dim=1)
    assert torch.allclose(task.loss(model, x, y, "sum"), per_sample.sum())
    assert torch.allclose(task.loss(model, x, y, "mean"), per_sample.mean())
    empty = task.collate([])
    assert float(task.loss(model, x[:0], empty, "sum").detach()) == 0.0  # an empty Poisson batch
    scorer = task.evaluator(("a", "b"), TaskSpec("multilabel", (0.5, 0.2)))
    with torch.no_grad():
        scorer.add(model, x[:25], y[:25])
        scorer.add(model, x[25:], y[25:])
        proba = torch.sigmoid(model(x).double()).numpy()
    result = scorer.finish(bootstrap_seed=3)
    truth = y.numpy() > 0.5
    expected = [auroc(truth[:, j], proba[:, j]) for j in range(2)]
    assert result.values["auroc.a"] == expected[0] and result.values["auroc.b"] == expected[1]
    assert result.values["mean_auroc"] == pytest.approx(np.mean(expected))
    pred = proba >= np.array([0.5, 0.2])
    assert result.accuracy == np.mean(np.all(pred == truth, axis=1))
    assert result.figures is not None and set(result.figures["per_class"]) == {"a", "b"}


def test_ncm_and_dp_rules_follow_the_task() -> None:
    multi = load_task("multilabel")
    assert multi.closed_form and multi.closed_form_solvers == ("ridge",) and multi.supports_dp
    assert CLASSIFY.closed_form_solvers == ("ridge", "ncm")


def test_the_plugin_guide_shows_the_plugin_the_tests_run() -> None:
    root = Path(__file__).resolve().parents[2]
    guide = (root / "docs" / "how-to" / "plugin-task.md").read_text()
    assert (root / "tests" / "plugin_task.py").read_text() in guide
