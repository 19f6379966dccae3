"""Sequence strings: label checks, CTC greedy decoding, edit distance, exact match and CER."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flsilo.scoring.strings import (
    BLANK,
    LabelProblem,
    charset_problem,
    decode_indices,
    edit_distance,
    encode,
    greedy_paths,
    max_length_problem,
    per_sample,
    score_strings,
    string_intervals,
)
from tests.conftest import examples

CHARSET = "0123456789ABC"


def reference_distance(a: str, b: str) -> int:
    """The textbook dynamic programme, cell by cell (Wagner and Fischer, 1974)."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1,
                table[i][j - 1] + 1,
                table[i - 1][j - 1] + (a[i - 1] != b[j - 1]),
            )
    return table[len(a)][len(b)]


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("", "", 0),
        ("", "ABC", 3),
        ("ABC", "", 3),
        ("AB12", "AB12", 0),
        ("AB12", "BA12", 2),
        ("flaw", "lawn", 2),
        ("AAAA", "A", 3),
    ],
)
def test_edit_distance_known_pairs(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


@settings(max_examples=examples(200))
@given(st.text("ABC12", max_size=12), st.text("ABC12", max_size=12))
def test_edit_distance_equals_the_textbook_programme(a: str, b: str) -> None:
    assert edit_distance(a, b) == reference_distance(a, b)
    assert edit_distance([ord(c) for c in a], [ord(c) for c in b]) == reference_distance(a, b)


def test_greedy_paths_merge_repeats_then_drop_blanks() -> None:
    best = np.array(
        [
            [1, 1, BLANK, 1, 2, 2],  # a a - a b b -> "a a b": a blank separates repeats
            [BLANK] * 6,  # nothing
            [3, BLANK, BLANK, 3, 3, BLANK],  # c - - c c - -> "c c"
        ]
    )
    assert greedy_paths(best) == [(1, 1, 2), (), (3, 3)]
    assert decode_indices((11, 12, 1), CHARSET) == "AB0"
    with pytest.raises(ValueError, match="N x T"):
        greedy_paths(np.zeros(4))


def test_encode_maps_characters_after_the_blank() -> None:
    assert encode("AB0", CHARSET, 8) == (11, 12, 1)
    assert decode_indices(encode("C9A", CHARSET, 3), CHARSET) == "C9A"


@pytest.mark.parametrize(
    ("label", "why", "hint"),
    [
        ("AB-1", "outside the federation's charset ('-')", "--charset"),
        ("ZZ", "has a character outside the federation's charset ('Z')", "--charset"),
        ("A-_.,;:/B", "charset ('-', '_', '.', ',', ';' and 2 more)", "--charset"),
        ("A12B34567", "9 characters long, past the plan's maximum of 8", "--max-length"),
        ("", "the label is empty", "label column"),
    ],
)
def test_encode_refuses_what_the_model_cannot_write(label: str, why: str, hint: str) -> None:
    with pytest.raises(LabelProblem) as caught:
        encode(label, CHARSET, 8)
    assert why in caught.value.why
    assert hint in caught.value.hint


@pytest.mark.parametrize(
    ("charset", "problem"),
    [
        ("0123456789", None),
        ("AB CD", None),
        ("", "empty"),
        ("ABCA", "lists 'A' twice"),
        ("AB\tC", "unprintable"),
        ("AB ", "starts or ends with a space"),
    ],
)
def test_charset_problems(charset: str, problem: str | None) -> None:
    found = charset_problem(charset)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_max_length_bounds() -> None:
    assert max_length_problem(8) is None
    assert "between 1 and" in str(max_length_problem(0))
    assert "between 1 and" in str(max_length_problem(10_000))


def test_scores_count_exact_strings_and_corpus_cer() -> None:
    predictions = ["AB12", "AB1", "XB12Q", ""]
    references = ["AB12", "AB12", "AB12", "C9"]
    scores = score_strings(predictions, references)
    # edits: 0, 1 (deletion), 2 (substitution + insertion), 2 (two deletions); chars 4+4+4+2
    assert scores.samples == 4
    assert scores.exact_match == 0.25
    assert scores.edits == 5
    assert scores.reference_chars == 14
    assert scores.cer == pytest.approx(5 / 14, abs=1e-15)
    assert score_strings([], []).as_dict() == {
        "samples": 0,
        "exact_match": 0.0,
        "cer": 0.0,
        "edits": 0,
        "reference_chars": 0,
    }
    with pytest.raises(ValueError, match="1 predictions for 2"):
        score_strings(["A"], ["A", "B"])


def test_intervals_are_seeded_and_hold_the_estimate() -> None:
    rng = np.random.default_rng(0)
    refs = [tuple(rng.integers(1, 10, size=6)) for _ in range(200)]
    preds = [r if rng.random() < 0.8 else r[:-1] for r in refs]
    exact, edits, lengths = per_sample(preds, refs)
    first = string_intervals(exact, edits, lengths, seed=3, draws=200)
    assert first == string_intervals(exact, edits, lengths, seed=3, draws=200)
    assert first != string_intervals(exact, edits, lengths, seed=4, draws=200)
    scores = score_strings(preds, refs)
    low, high = first["exact_match"] or (2.0, -1.0)
    assert low <= scores.exact_match <= high
    low, high = first["cer"] or (2.0, -1.0)
    assert low <= scores.cer <= high
    assert string_intervals(exact[:0], edits[:0], lengths[:0], seed=0, draws=10) == {
        "exact_match": None,
        "cer": None,
    }
