"""Property: any single-byte change to a valid artifact or its signature is rejected."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flsilo.artifact import sig_path, verify_file
from flsilo.errors import FlsiloError
from flsilo.trust import AllowedSigners
from tests.hostile.test_corpus import Corpus


def _flip(path: Path, position: int, value: int) -> bytes:
    data = bytearray(path.read_bytes())
    position %= len(data)
    data[position] = (data[position] + value) % 256
    return bytes(data)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["file", "sig"]),
    position=st.integers(min_value=0),
    value=st.integers(1, 255),
)
def test_single_byte_change_is_rejected(
    tmp_path_factory, which: str, position: int, value: int
) -> None:
    corpus = Corpus(tmp_path_factory.mktemp("tamper"))
    good = corpus.good()
    trust = AllowedSigners.load(corpus.signers)
    verify_file(good, trust)  # the untouched pair verifies
    target = good if which == "file" else sig_path(good)
    target.write_bytes(_flip(target, position, value))
    try:
        verify_file(good, trust)
    except FlsiloError as err:
        assert err.exit_code in (3, 4)
    else:
        raise AssertionError(f"changed byte {position} of the {which} was not detected")
