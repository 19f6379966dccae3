"""Strings for the ``sequence`` task: the charset, label checks, CTC greedy decoding, and the
figures people read (exact-string accuracy and character error rate).

Plain numpy and Python, no torch, so reports, cards and tests read the same definitions.

A federation's *charset* is the ordered string of characters its model can write; the
model has one output per character plus the CTC *blank* at index 0, so character ``c`` is
output ``charset.index(c) + 1``. A label is a string of charset characters, at most the
plan's ``max_length`` long.

Metrics (the definitions of the speech and OCR literature, e.g. jiwer's ``cer``):

- ``exact_match``: the share of samples whose decoded string equals the label exactly;
- ``cer``: the character error rate over the whole set, the sum of the Levenshtein edit
  distances (insertions, deletions and substitutions, each costing 1) between decoded
  string and label, divided by the sum of the labels' lengths. It can exceed 1 (a model
  that writes many extra characters).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flsilo.scoring.bootstrap import bootstrap_rows

BLANK = 0
"""The CTC blank's output index; character i of the charset is output i + 1."""

MAX_LENGTH_LIMIT = 256
"""The longest ``--max-length`` a plan may set (labels of plates and meters are short)."""


class LabelProblem(ValueError):
    """Why a label string cannot be a target, and what to do (``str(exc)`` is the why)."""

    def __init__(self, why: str, hint: str) -> None:
        super().__init__(why)
        self.why = why
        self.hint = hint


def charset_problem(charset: str) -> str | None:
    """Why ``charset`` cannot be a federation's charset, or None when it can."""
    if not charset:
        return "the charset is empty"
    seen: set[str] = set()
    for ch in charset:
        if ch in seen:
            return f"the charset lists {ch!r} twice"
        seen.add(ch)
        if not ch.isprintable() or (unicodedata.category(ch).startswith("Z") and ch != " "):
            return f"the charset holds the unprintable character {ch!r}"
    if charset != charset.strip():
        return "the charset starts or ends with a space (labels are read stripped)"
    return None


def max_length_problem(max_length: int) -> str | None:
    if not 1 <= max_length <= MAX_LENGTH_LIMIT:
        return (
            f"the maximum label length must be between 1 and {MAX_LENGTH_LIMIT}, not {max_length}"
        )
    return None


def encode(label: str, charset: str, max_length: int) -> tuple[int, ...]:
    """``label`` as output indices (1-based; 0 is the blank), or ``LabelProblem``."""
    if not label:
        raise LabelProblem(
            "the label is empty", "every image needs the string it shows in the label column"
        )
    outside = [ch for ch in dict.fromkeys(label) if ch not in charset]
    if outside:
        shown = ", ".join(repr(ch) for ch in outside[:5])
        if len(outside) > 5:
            shown += f" and {len(outside) - 5} more"
        raise LabelProblem(
            f"label {label!r} has {'a character' if len(outside) == 1 else 'characters'} "
            f"outside the federation's charset ({shown})",
            f"correct the label, or ask the hub to start a federation whose --charset "
            f"holds it (this one's: {charset!r})",
        )
    if len(label) > max_length:
        raise LabelProblem(
            f"label {label!r} is {len(label)} characters long, past the plan's "
            f"maximum of {max_length}",
            "correct the label, or ask the hub for a federation with a larger --max-length",
        )
    index = {ch: i + 1 for i, ch in enumerate(charset)}
    return tuple(index[ch] for ch in label)


def decode_indices(indices: Sequence[int], charset: str) -> str:
    """Output indices (no blanks) back to text."""
    return "".join(charset[i - 1] for i in indices)


def greedy_paths(best: np.ndarray) -> list[tuple[int, ...]]:
    """CTC best-path decoding of each row of ``best`` (N x T arg-max outputs): merge runs of
    the same output, then drop blanks. ``[a, a, -, a, b, b]`` decodes to ``a a b``."""
    best = np.asarray(best)
    if best.ndim != 2:
        raise ValueError(f"expected N x T arg-max outputs, got shape {best.shape}")
    keep = np.ones(best.shape, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != BLANK
    return [tuple(int(v) for v in row[mask]) for row, mask in zip(best, keep, strict=True)]


def edit_distance(a: Sequence[int] | str, b: Sequence[int] | str) -> int:
    """Levenshtein distance between two sequences (insert, delete, substitute: cost 1 each).

    One numpy row per element of ``a``; within a row the insertions are a running minimum
    (``row[j] = min_k (tmp[k] + j - k)``), so each row is vectorised.
    """
    if isinstance(a, str):
        a = [ord(c) for c in a]
    if isinstance(b, str):
        b = [ord(c) for c in b]
    if len(a) == 0 or len(b) == 0:
        return max(len(a), len(b))
    target = np.asarray(b, dtype=np.int64)
    steps = np.arange(len(target) + 1, dtype=np.int64)
    prev = steps.copy()
    for i, item in enumerate(a, start=1):
        tmp = np.empty_like(prev)
        tmp[0] = i
        tmp[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (target != item))
        prev = np.minimum.accumulate(tmp - steps) + steps
    return int(prev[-1])


@dataclass(frozen=True)
class StringScores:
    """Exact-string accuracy and character error rate of predictions against labels."""

    samples: int
    exact_match: float
    cer: float
    edits: int
    reference_chars: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "samples": self.samples,
            "exact_match": self.exact_match,
            "cer": self.cer,
            "edits": self.edits,
            "reference_chars": self.reference_chars,
        }


def score_strings(
    predictions: Sequence[Sequence[int] | str], references: Sequence[Sequence[int] | str]
) -> StringScores:
    """Exact match and CER (total edits / total reference characters) over paired lists."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    exact = edits = chars = 0
    for pred, ref in zip(predictions, references, strict=True):
        exact += tuple(pred) == tuple(ref)
        edits += edit_distance(pred, ref)
        chars += len(ref)
    n = len(references)
    return StringScores(
        samples=n,
        exact_match=exact / n if n else 0.0,
        cer=edits / chars if chars else 0.0,
        edits=edits,
        reference_chars=chars,
    )


def per_sample(
    predictions: Sequence[Sequence[int]], references: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: exact (0/1), edit distance, reference length (for bootstrap intervals)."""
    exact = np.array([tuple(p) == tuple(r) for p, r in zip(predictions, references, strict=True)])
    edits = np.array([edit_distance(p, r) for p, r in zip(predictions, references, strict=True)])
    lengths = np.array([len(r) for r in references])
    return exact.astype(np.float64), edits.astype(np.float64), lengths.astype(np.float64)


def string_intervals(
    exact: np.ndarray, edits: np.ndarray, lengths: np.ndarray, *, seed: int, draws: int
) -> dict[str, tuple[float, float] | None]:
    """Seeded percentile 95% intervals of exact match and CER, resampling samples
    (``flsilo.scoring.bootstrap``, as for the classification figures): each block of
    resamples at once, each resample's figures the floats ``exact[idx].mean()`` and
    ``edits[idx].sum() / lengths[idx].sum()`` give (numpy sums each row as it sums a vector)."""

    def figures(block: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        chars = lengths[block].sum(axis=1)
        has_chars = chars != 0
        cer = np.divide(edits[block].sum(axis=1), chars, out=np.zeros(len(block)), where=has_chars)
        return {
            "exact_match": (exact[block].mean(axis=1), np.ones(len(block), dtype=bool)),
            "cer": (cer, has_chars),
        }

    return bootstrap_rows(figures, ("exact_match", "cer"), exact.shape[0], seed=seed, draws=draws)
