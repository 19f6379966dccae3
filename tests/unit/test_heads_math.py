"""Closed-form head math, closed-form schedules, freeze globs and head discovery."""

from __future__ import annotations

import numpy as np
import pytest

from flsilo.format.tensorsets import frozen_names, parse_solver, statistics_specs, unmatched_globs
from flsilo.plans.plan import Plan, parse_schedule, plan_for_round, schedule_problem, schedule_text
from flsilo.runtime.errors import UsageError
from hub_kit.closed_form import cholesky_solve, ncm_head, ridge_head, solve_head, sum_statistics


def test_cholesky_solve_matches_lapack_and_is_repeatable() -> None:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((40, 40))
    a = m @ m.T + 40 * np.eye(40)
    b = rng.standard_normal((40, 7))
    x = cholesky_solve(a, b)
    assert np.allclose(x, np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)
    assert cholesky_solve(a, b).tobytes() == x.tobytes()


def test_cholesky_refuses_a_matrix_that_is_not_positive_definite() -> None:
    with pytest.raises(np.linalg.LinAlgError):
        cholesky_solve(np.array([[1.0, 2.0], [2.0, 1.0]]), np.ones((2, 1)))


def _site_stats(x: np.ndarray, y: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    from site_kit.statistics import head_statistics

    return head_statistics(x, y, classes, "ridge")


def test_summed_site_statistics_solve_to_the_pooled_ridge_head() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 6))
    y = rng.integers(0, 3, 300)
    sites = [(x[:50], y[:50]), (x[50:220], y[50:220]), (x[220:], y[220:])]
    w, b = solve_head("ridge:0.3", sum_statistics([_site_stats(a, c, 3) for a, c in sites]))
    aug = np.c_[x, np.ones(300)]
    reference = np.linalg.solve(aug.T @ aug + np.diag([0.3] * 6 + [0.0]), aug.T @ np.eye(3)[y])
    assert np.allclose(w, reference[:6].T, atol=1e-10)
    assert np.allclose(b, reference[6], atol=1e-10)


def test_ridge_without_penalty_on_the_bias_fits_the_class_frequencies() -> None:
    # features that carry no information: the head predicts each class's share via the bias
    gram = np.diag([1e6, 1e6, 100.0])
    gram[2, :2] = gram[:2, 2] = 0.0
    w, b = ridge_head(gram, np.zeros((2, 2)), np.array([25.0, 75.0]), lam=1.0)
    assert np.allclose(w, 0.0) and np.allclose(b, [0.25, 0.75])


def test_ncm_head_scores_are_nearest_mean_and_absent_classes_never_win() -> None:
    sums = np.array([[2.0, 0.0], [0.0, 6.0], [0.0, 0.0]])
    counts = np.array([2.0, 3.0, 0.0])
    w, b = ncm_head(sums, counts)
    assert np.allclose(w[:2], [[1.0, 0.0], [0.0, 2.0]])
    for point, nearest in (([0.9, 0.1], 0), ([0.2, 1.7], 1), ([0.0, 0.0], 0)):
        assert int(np.argmax(w @ np.array(point) + b)) == nearest


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ridge", ("ridge", 1.0)), ("ridge:0.01", ("ridge", 0.01)), ("ncm", ("ncm", 0.0))],
)
def test_head_solver_names(text: str, expected: tuple[str, float]) -> None:
    assert parse_solver(text) == expected


@pytest.mark.parametrize("text", ["ridge:0", "ridge:-1", "ridge:x", "ncm:1", "lasso", ""])
def test_bad_head_solvers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_solver(text)


def test_statistics_tensor_set_depends_on_the_solver() -> None:
    assert sorted(statistics_specs("ncm", 8, 3)) == [
        "statistics.class_counts",
        "statistics.class_sums",
    ]
    ridge = statistics_specs("ridge:2", 8, 3)
    assert ridge["statistics.gram"] == ("F64", (9, 9))
    assert ridge["statistics.class_sums"] == ("F64", (3, 8))


def test_closed_form_schedules_add_a_statistics_round() -> None:
    alone = parse_schedule("closed-form", (5,))
    assert (alone.rounds, schedule_text(alone)) == (1, "closed-form")
    then = parse_schedule("closed-form+periodic:3", (4, 2, 1))
    assert (then.kind, then.rounds, then.local_epochs) == ("closed-form+periodic", 4, (1, 4, 2, 1))
    assert schedule_text(then) == "closed-form+periodic:3"
    assert schedule_problem(then) is None
    base = Plan(local_epochs=4, batch_size=8, val_fraction=0.2, seed=10)
    first, second = plan_for_round(base, then, 0), plan_for_round(base, then, 1)
    assert first is not None and second is not None
    assert (first.kind, first.val_fraction) == ("statistics", 0.0)
    assert (second.kind, second.val_fraction, second.local_epochs, second.seed) == (
        "train",
        0.2,
        4,
        11,
    )
    assert plan_for_round(base, then, 4) is None


@pytest.mark.parametrize("text", ["closed-form:2", "closed-form+one-shot", "closed-form+periodic"])
def test_malformed_closed_form_schedules_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_schedule(text, (1,))


def test_freeze_globs_match_state_dict_names() -> None:
    names = ["stem.0.weight", "stages.0.conv1.weight", "fc.weight", "fc.bias"]
    assert frozen_names(names, ("stem.*", "stages.*")) == {"stem.0.weight", "stages.0.conv1.weight"}
    assert unmatched_globs(names, ("stem.*", "backbone.*")) == ["backbone.*"]


def test_every_builtin_model_names_its_head_and_features() -> None:
    import torch

    from flsilo.models.registry import build_model, head_features, head_tensor_names

    cases = {
        "logreg": (("1.weight", "1.bias"), 64),
        "mlp:hidden=16": (("3.weight", "3.bias"), 16),
        "cnn:channels=4x8,hidden=12": (("9.weight", "9.bias"), 12),
        "resnet:width=8": (("fc.weight", "fc.bias"), 32),
    }
    for spec, (head, width) in cases.items():
        model = build_model(spec, (1, 8, 8), 10).eval()
        assert head_tensor_names(model) == head
        features = head_features(model, torch.zeros(3, 1, 8, 8))
        assert tuple(features.shape) == (3, width)
