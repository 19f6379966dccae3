"""The sequence task: labels to targets, CTC loss, best-path figures, model checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flsilo.models.registry import build_model
from flsilo.plans.plan import TaskSpec
from flsilo.runtime.errors import UsageError
from flsilo.tasks import LabelError, Target, load_task
from flsilo.tasks.sequence import ctc_loss

SPEC = TaskSpec("sequence", (), "0123AB", 4)
TASK = load_task("sequence")


def test_labels_become_output_indices_after_the_blank() -> None:
    target = TASK.parse([" AB1 "], SPEC, ())
    assert target == Target(-1, "AB1")
    assert TASK.decode_target(target, SPEC).tolist() == [5, 6, 2]
    assert TASK.output_size((), SPEC) == 7
    assert TASK.output_names((), SPEC) == ("<blank>", "0", "1", "2", "3", "A", "B")
    assert TASK.counts(np.zeros(3), ()) == []


@pytest.mark.parametrize(
    ("cell", "says"),
    [("AB-1", "('-')"), ("AAAAB", "past the plan's maximum of 4"), ("", "empty")],
)
def test_a_label_outside_the_plan_is_a_label_error(cell: str, says: str) -> None:
    with pytest.raises(LabelError, match=r"\(") as caught:
        TASK.parse([cell], SPEC, ())
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "classes", "says"),
    [
        (SPEC, (), None),
        (TaskSpec("sequence", (), "", 4), (), "needs --charset"),
        (TaskSpec("sequence", (), "AB\n", 4), (), "unprintable"),
        (TaskSpec("sequence", (), "AB", 0), (), "--max-length"),
        (SPEC, ("a", "b"), "takes no --classes"),
    ],
)
def test_spec_problems(spec: TaskSpec, classes: tuple[str, ...], says: str | None) -> None:
    found = TASK.spec_problem(spec, classes)
    assert found is None if says is None else (found is not None and says in found)


def test_collate_puts_labels_end_to_end() -> None:
    flat, lengths = TASK.collate([np.array([1, 2]), np.array([3]), np.array([4, 5, 6])])
    assert flat.tolist() == [1, 2, 3, 4, 5, 6] and lengths.tolist() == [2, 1, 3]
    flat, lengths = TASK.collate([])  # an empty Poisson batch
    assert flat.numel() == 0 and lengths.numel() == 0


def test_ctc_loss_sums_per_sample_losses() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 7)
    y = TASK.collate([np.array([1, 2]), np.array([3]), np.array([4, 4, 6])])
    each = F.ctc_loss(
        logits.log_softmax(2).permute(1, 0, 2), y[0], torch.full((3,), 8), y[1],
        blank=0, reduction="none",
    )  # fmt: skip
    assert torch.allclose(ctc_loss(logits, y, "sum"), each.sum())
    assert torch.allclose(ctc_loss(logits, y, "mean"), each.sum() / 3)
    with pytest.raises(UsageError, match="N x T x K"):
        ctc_loss(torch.randn(3, 7), y, "sum")


class Fixed(nn.Module):
    """A 'model' that returns the logits it was built with."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def one_hot_path(path: list[int], k: int = 7) -> torch.Tensor:
    return F.one_hot(torch.tensor(path), k).float() * 20


def test_the_evaluator_reads_best_paths_and_scores_them() -> None:
    # "AB1" read exactly (A A - B 1), "30" read as "3" (one deletion), "0" read exactly.
    logits = torch.stack(
        [
            one_hot_path([5, 5, 0, 6, 2, 0]),
            one_hot_path([4, 0, 0, 0, 0, 0]),
            one_hot_path([0, 1, 1, 0, 0, 0]),
        ]
    )
    labels = ["AB1", "30", "0"]
    y = TASK.collate([TASK.decode_target(TASK.parse([s], SPEC, ()), SPEC) for s in labels])
    scorer = TASK.evaluator((), SPEC)
    scorer.add(Fixed(logits), torch.zeros(3, 1), y)
    assert scorer.strings() == [("AB1", "AB1"), ("3", "30"), ("0", "0")]  # type: ignore[attr-defined]
    result = scorer.finish(bootstrap_seed=1)
    assert result.values == {"exact_match": 2 / 3, "cer": 1 / 6}
    assert result.accuracy == 2 / 3 and result.samples == 3
    assert result.figures is not None and result.figures["edits"] == 1
    assert set(result.figures["ci95"]) == {"exact_match", "cer"}
    assert scorer.finish().figures is None


def test_hub_init_asks_for_a_model_that_fits() -> None:
    fits = build_model("crnn:channels=4x8,hidden=8", (1, 16, 32), 7)
    assert TASK.model_problem(fits, (1, 16, 32), SPEC) is None
    too_short = TaskSpec("sequence", (), "0123AB", 5)  # 9 steps needed, 8 made
    assert "8 time steps" in str(TASK.model_problem(fits, (1, 16, 32), too_short))
    flat = build_model("cnn:channels=4,hidden=8", (1, 16, 32), 7)
    assert "N x T x K" in str(TASK.model_problem(flat, (1, 16, 32), SPEC))


def test_export_compares_decoded_strings_for_sequence_logits() -> None:
    from site_kit.export import same_predictions

    paths = np.array([[1, 1, 0, 2], [3, 0, 0, 0]])
    same = np.array([[1, 0, 0, 2], [0, 3, 3, 0]])  # other alignments, the same strings
    other = np.array([[1, 0, 1, 2], [3, 0, 0, 0]])  # "112", not "12"
    assert same_predictions(
        F.one_hot(torch.tensor(paths), 4).numpy(), F.one_hot(torch.tensor(same), 4).numpy()
    )
    assert not same_predictions(
        F.one_hot(torch.tensor(paths), 4).numpy(), F.one_hot(torch.tensor(other), 4).numpy()
    )
    assert same_predictions(np.eye(3), np.eye(3)) and not same_predictions(
        np.eye(3), np.eye(3)[::-1]
    )
