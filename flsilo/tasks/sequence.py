"""``sequence``: a short string per image (licence plates, meter readings), CTC, exact match.

The plan's ``charset`` lists the characters a string may hold and ``max_length`` how many;
the model (``crnn``, or any model returning N x T x K logits with K = charset + 1) scores
every time step over the CTC blank (output 0) and the charset (character i is output
i + 1). Labels come from an ``images-csv`` manifest's ``label`` column; a label with a
character outside the charset, longer than ``max_length`` or empty is a bad record naming
its row. The loss is CTC (Graves et al., ICML 2006) over the log-softmax of every time
step, a sum of per-sample losses (so DP-SGD clips each sample's gradient); decoding is
best path (the arg-max per step, repeats merged, blanks dropped). The figures
(``flsilo.scoring.strings``): ``exact_match`` (the share of strings read exactly, the primary
metric, also reported as ``accuracy``) and ``cer`` (edits over reference characters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flsilo.plans.plan import TaskSpec
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from flsilo.scoring.strings import (
    LabelProblem,
    charset_problem,
    decode_indices,
    encode,
    greedy_paths,
    max_length_problem,
    per_sample,
    score_strings,
    string_intervals,
)
from flsilo.tasks.base import Evaluation, Evaluator, LabelError, Target, Task

if TYPE_CHECKING:
    import torch

LABEL_COLUMN = "label"
BLANK_NAME = "<blank>"
BOOTSTRAP_DRAWS = 1000


class SequenceTask(Task):
    name = "sequence"
    primary_metric = "exact_match"
    higher_is_better = True
    closed_form = False
    supports_dp = True
    needs_classes = False
    formats = ("images-csv",)

    # -- targets ------------------------------------------------------------------------
    def label_columns(self, spec: TaskSpec, classes: tuple[str, ...]) -> tuple[str, ...]:
        del spec, classes
        return (LABEL_COLUMN,)

    def parse(self, cells: Sequence[str], spec: TaskSpec, classes: tuple[str, ...]) -> Target:
        del classes
        label = cells[0].strip()
        try:
            encode(label, spec.charset, spec.max_length)
        except LabelProblem as exc:
            raise LabelError(f"{exc.why} ({exc.hint})") from exc
        return Target(-1, label)

    def decode_target(self, target: Target, spec: TaskSpec) -> np.ndarray:
        return np.asarray(encode(target.text, spec.charset, spec.max_length), dtype=np.int64)

    def counts(self, targets: np.ndarray, classes: tuple[str, ...]) -> list[int]:
        """No classes: the charset defines the outputs (``--min-cell-size`` guards none)."""
        del targets, classes
        return []

    def spec_problem(self, spec: TaskSpec, classes: tuple[str, ...]) -> str | None:
        if classes:
            return "the sequence task takes no --classes (its --charset defines the outputs)"
        if not spec.charset:
            return "the sequence task needs --charset (the characters a label may hold)"
        problem = charset_problem(spec.charset)
        if problem:
            return f"--charset: {problem}"
        problem = max_length_problem(spec.max_length)
        return f"--max-length: {problem}" if problem else None

    # -- model side ---------------------------------------------------------------------
    def output_size(self, classes: tuple[str, ...], spec: TaskSpec) -> int:
        del classes
        return len(spec.charset) + 1

    def output_names(self, classes: tuple[str, ...], spec: TaskSpec) -> tuple[str, ...]:
        del classes
        return (BLANK_NAME, *spec.charset)

    def model_problem(
        self, model: torch.nn.Module, input_shape: tuple[int, ...], spec: TaskSpec
    ) -> str | None:
        """The model must give N x T x K logits with K = charset + 1 and T time steps enough
        for any label: its characters, plus a blank between each repeated pair (2L - 1)."""
        import torch

        problem = super().model_problem(model, input_shape, spec)  # a detector, say
        if problem is not None:
            return problem
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape))
        model.train(was_training)
        need = 2 * spec.max_length - 1
        if out.dim() != 3:
            return (
                f"it returns shape {tuple(out.shape)} per batch, and the sequence task needs "
                "N x T x K logits, a time step per image column (--model crnn)"
            )
        if out.shape[1] < need:
            return (
                f"it makes {out.shape[1]} time steps, and a label of {spec.max_length} "
                f"characters may need {need} (widen --input-shape or lower --max-length)"
            )
        return None

    def collate(self, targets: Sequence[np.ndarray]) -> Any:
        """[every label's outputs end to end, each label's length] (a list: the training loop
        moves each tensor to the device)."""
        import torch

        lengths = torch.tensor([len(t) for t in targets], dtype=torch.int64)
        flat = np.concatenate(list(targets)) if targets else np.zeros(0, dtype=np.int64)
        return [torch.from_numpy(flat.astype(np.int64, copy=False)), lengths]

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: Any, reduction: str) -> torch.Tensor:
        return ctc_loss(model(x), y, reduction)

    def evaluator(self, classes: tuple[str, ...], spec: TaskSpec) -> Evaluator:
        del classes
        return SequenceEvaluator(spec)


def check_logits(logits: torch.Tensor) -> None:
    """Refuse outputs CTC cannot read (a plug-in model's, hub init checks built-ins)."""
    if logits.dim() != 3:
        raise UsageError(
            f"the sequence task needs N x T x K logits; this model returns shape "
            f"{tuple(logits.shape)}",
            code=Code.BAD_MODEL_SPEC,
            hint="use a model with a time step per image column, e.g. --model crnn",
        )


def ctc_loss(logits: torch.Tensor, y: Any, reduction: str) -> torch.Tensor:
    """CTC of N x T x K logits against (flat targets, lengths): summed or averaged per sample."""
    import torch
    import torch.nn.functional as F

    targets, lengths = y
    check_logits(logits)
    n, steps = logits.shape[0], logits.shape[1]
    log_probs = logits.log_softmax(dim=2).permute(1, 0, 2)  # T x N x K, as ctc_loss takes
    per_sample_loss = F.ctc_loss(
        log_probs,
        targets,
        torch.full((n,), steps, dtype=torch.int64),
        lengths,
        blank=0,
        reduction="none",
        zero_infinity=True,
    )
    total = per_sample_loss.sum()
    return total if reduction == "sum" else total / max(n, 1)


class SequenceEvaluator(Evaluator):
    """Summed CTC loss, and each sample's best-path string against its label."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.total_loss = 0.0
        self.predictions: list[tuple[int, ...]] = []
        self.references: list[tuple[int, ...]] = []

    def add(self, model: torch.nn.Module, x: torch.Tensor, y: Any) -> None:
        logits = model(x)
        self.total_loss += float(ctc_loss(logits, y, "sum"))
        self.predictions += greedy_paths(logits.argmax(dim=2).cpu().numpy())
        flat, lengths = (t.cpu().numpy() for t in y)
        ends = np.cumsum(lengths)
        self.references += [
            tuple(int(v) for v in flat[e - k : e]) for e, k in zip(ends, lengths, strict=True)
        ]

    def strings(self) -> list[tuple[str, str]]:
        """(read, label) per sample, in order."""
        charset = self.spec.charset
        return [
            (decode_indices(p, charset), decode_indices(r, charset))
            for p, r in zip(self.predictions, self.references, strict=True)
        ]

    def finish(self, *, bootstrap_seed: int | None = None) -> Evaluation:
        scores = score_strings(self.predictions, self.references)
        n = scores.samples
        figures: dict[str, Any] | None = None
        if bootstrap_seed is not None:
            exact, edits, lengths = per_sample(self.predictions, self.references)
            intervals = string_intervals(
                exact, edits, lengths, seed=bootstrap_seed, draws=BOOTSTRAP_DRAWS
            )
            figures = {
                **scores.as_dict(),
                "ci95": {k: None if v is None else list(v) for k, v in intervals.items()},
            }
        return Evaluation(
            loss=self.total_loss / n if n else 0.0,
            accuracy=scores.exact_match,
            samples=n,
            values={"exact_match": scores.exact_match, "cer": scores.cer},
            figures=figures,
        )


TASK = SequenceTask()
