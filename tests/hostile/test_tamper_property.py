"""Property: any single-byte change to a valid artifact or its signature is rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flsilo.format.artifact import sig_path, verify_file
from flsilo.runtime.errors import FlsiloError
from flsilo.signing.trust import AllowedSigners
from tests.conftest import examples
from tests.hostile.test_corpus import Corpus


def _flip(path: Path, position: int, value: int) -> bytes:
    data = bytearray(path.read_bytes())
    position %= len(data)
    data[position] = (data[position] + value) % 256
    return bytes(data)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AllowedSigners, bytes, bytes]:
    """One signed artifact and its trust, made once: each example restores its bytes."""
    corpus = Corpus(tmp_path_factory.mktemp("tamper"))
    good = corpus.good()
    return good, AllowedSigners.load(corpus.signers), good.read_bytes(), sig_path(good).read_bytes()


@settings(max_examples=examples(60))
@given(
    which=st.sampled_from(["file", "sig"]),
    position=st.integers(min_value=0),
    value=st.integers(1, 255),
)
def test_single_byte_change_is_rejected(
    pair: tuple[Path, AllowedSigners, bytes, bytes], which: str, position: int, value: int
) -> None:
    good, trust, file_bytes, sig_bytes = pair
    good.write_bytes(file_bytes)
    sig_path(good).write_bytes(sig_bytes)
    verify_file(good, trust)  # the untouched pair verifies
    target = good if which == "file" else sig_path(good)
    target.write_bytes(_flip(target, position, value))
    try:
        verify_file(good, trust)
    except FlsiloError as err:
        assert err.exit_code in (3, 4)
    else:
        raise AssertionError(f"changed byte {position} of the {which} was not detected")
