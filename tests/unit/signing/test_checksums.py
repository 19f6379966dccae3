"""SHA256SUMS: written in the format sha256sum -c reads, parsed strictly."""

from __future__ import annotations

import pytest

from flsilo.runtime.errors import MalformedInputError
from flsilo.signing.checksums import parse_sums, render_sums

A, B = "a" * 64, "b" * 64


def test_round_trip_sorted_two_spaces() -> None:
    text = render_sums({"z.sig": A, "b.safetensors": B})
    assert text == f"{B}  b.safetensors\n{A}  z.sig\n"
    assert parse_sums(text, source="S") == {"z.sig": A, "b.safetensors": B}
    assert parse_sums(f"{A} *bin-mode\n", source="S") == {"bin-mode": A}


@pytest.mark.parametrize(
    "text",
    [f"{A[:-1]}  short\n", f"{A.upper()}  upper\n", f"{A}  x\n{B}  x\n", f"{A}\tx\n", "junk\n"],
)
def test_malformed_lines_are_refused(text: str) -> None:
    with pytest.raises(MalformedInputError) as info:
        parse_sums(text, source="S")
    assert info.value.code == "sums-malformed"


@pytest.mark.parametrize("name", ["../up", "a/b", "", "new\nline"])
def test_only_plain_names_are_written(name: str) -> None:
    with pytest.raises(ValueError):
        render_sums({name: A})
