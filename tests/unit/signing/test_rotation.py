"""Hub key rotation statements: a site follows only an unbroken chain from the key it trusts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flsilo.runtime.errors import VerificationError
from flsilo.signing.keys import generate_key, public_of
from flsilo.signing.rotation import follow_chain, load_chain, make_rotation, walk_chain

K0, K1, K2, MALLORY = (generate_key(t) for t in ("ed25519", "ecdsa-p256", "ed25519", "ed25519"))
R1 = make_rotation(K0, K1, "fed", 1)
R2 = make_rotation(K1, K2, "fed", 2)


@pytest.mark.parametrize(
    "trusted, chain, expect",
    [
        (K0, (), K0),
        (K0, (R1,), K1),
        (K0, (R1, R2), K2),
        (K1, (R1, R2), K2),  # confirmed after the first rotation: starts mid-chain
        (MALLORY, (R1, R2), MALLORY),  # a chain that does not start at the trusted key
    ],
)
def test_follow_chain(trusted, chain, expect) -> None:
    got = follow_chain(public_of(trusted), chain, "fed", source="p")
    assert got.blob == public_of(expect).blob


@pytest.mark.parametrize(
    "chain",
    [
        (replace(R1, old_signature=make_rotation(MALLORY, K1, "fed", 1).old_signature),),
        (replace(R1, new_signature=R2.new_signature),),
        (make_rotation(K0, K1, "other-fed", 1),),
        (replace(R1, statement=R1.statement.replace('"seq":1', '"seq":7')),),
        (R1, make_rotation(MALLORY, K2, "fed", 2), R2),  # a gap after the chain started
        (R2, R1),  # reordered
        (R2,),  # the start left out
        (R1, make_rotation(K1, K2, "fed", 3)),  # a statement spliced in from elsewhere
        (R1, make_rotation(K1, K0, "fed", 2), R1),  # a loop: an old statement replayed
    ],
    ids=[
        "old-sig-by-another",
        "new-sig-of-another",
        "other-federation",
        "edited",
        "gap",
        "reordered",
        "start-left-out",
        "wrong-place",
        "loop",
    ],
)
def test_broken_chains_are_refused(chain) -> None:
    with pytest.raises(VerificationError) as info:
        follow_chain(public_of(K0), chain, "fed", source="p")
    assert info.value.code == "rotation-broken"


@pytest.mark.parametrize(
    "statement",
    [
        "[]",
        '"x"',
        '{"type": "flsilo-root-rotation/1", "federation": "fed", "old_key": 5, "new_key": 5}',
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["list", "string", "keys-not-text", "deep-nesting"],
)
def test_a_statement_that_is_not_one_is_a_broken_chain(statement: str) -> None:
    """Statements come from a file on the stick: any shape is refused with one line."""
    chain = (replace(R1, statement=statement),)
    with pytest.raises(VerificationError) as info:
        follow_chain(public_of(K0), chain, "fed", source="p")
    assert info.value.code == "rotation-broken"


@pytest.mark.parametrize(
    "data", [b"[" * 500_000, b"[1]", b'[["statement"]]'], ids=["deep", "numbers", "lists"]
)
def test_an_unreadable_key_chain_file_is_a_broken_chain(data: bytes) -> None:
    with pytest.raises(VerificationError) as info:
        load_chain(data, source="PACKAGE.key-chain.json")
    assert info.value.code == "rotation-broken"


def test_a_chain_back_to_a_key_the_follower_left_is_refused_even_when_both_signed() -> None:
    """Never back to a retired key across the whole history, not one walk: a follower already
    on the third key (having left the first two) refuses a statement from the third key back
    to the first, though the holder of both keys signed it properly."""
    back = make_rotation(K2, K0, "fed", 3)
    on_third = follow_chain(public_of(K0), (R1, R2), "fed", source="p")
    assert on_third.blob == public_of(K2).blob
    left = [public_of(K0), public_of(K1)]
    with pytest.raises(VerificationError) as info:
        follow_chain(on_third, (R1, R2, back), "fed", source="p", retired=left)
    assert info.value.code == "rotation-broken" and "already left" in info.value.message
    # and the walk names every key it passes, so the follower can remember them all
    walked = walk_chain(public_of(K0), (R1, R2), "fed", source="p")
    assert [k.blob for k in walked] == [public_of(k).blob for k in (K0, K1, K2)]
    # a new key onwards from the third is still followed with the same memory
    onwards = make_rotation(K2, MALLORY, "fed", 3)
    got = follow_chain(on_third, (R1, R2, onwards), "fed", source="p", retired=left)
    assert got.blob == public_of(MALLORY).blob
