"""allowed_signers: OpenSSH syntax and semantics (patterns, namespaces, validity, revocation)."""

from __future__ import annotations

import pytest

from flsilo.runtime.errors import MalformedInputError, VerificationError
from flsilo.signing.keys import PublicKey, generate_key
from flsilo.signing.trust import (
    AllowedSigners,
    match_pattern_list,
    parse_allowed_signers,
    parse_time,
)

A = PublicKey.from_key(generate_key().public_key())
B = PublicKey.from_key(generate_key().public_key())


@pytest.mark.parametrize(
    "value, patterns, expected",
    [
        ("site-a", "site-a", True),
        ("site-a", "site-*", True),
        ("site-a", "site-?", True),
        ("site-a", "site-b,site-a", True),
        ("site-a", "site-*,!site-a", False),
        ("hub", "site-*", False),
    ],
)
def test_patterns(value: str, patterns: str, expected: bool) -> None:
    assert match_pattern_list(value, patterns) is expected


def signers(text: str) -> AllowedSigners:
    return AllowedSigners(parse_allowed_signers(text))


def test_namespaces_and_principals() -> None:
    s = signers(
        f'# comment\n\nsite-a namespaces="flsilo-bundle" {A.openssh_line()}\n"hub" {B.openssh_line()}\n'
    )
    assert s.check("site-a", "flsilo-bundle", A, 0, source="f").principals == "site-a"
    assert s.check("hub", "flsilo-package", B, 0, source="f").principals == "hub"
    for principal, ns, key, code in [
        ("site-a", "flsilo-package", A, "namespace-not-allowed"),
        ("site-b", "flsilo-bundle", A, "principal-mismatch"),
        (
            "site-a",
            "flsilo-bundle",
            PublicKey.from_key(generate_key().public_key()),
            "unknown-signer",
        ),
    ]:
        with pytest.raises(VerificationError) as info:
            s.check(principal, ns, key, 0, source="f")
        assert info.value.code == code


def test_validity_window_and_revocation() -> None:
    after, before = (
        parse_time("20260101Z", source="t", line_no=1),
        parse_time("20270101Z", source="t", line_no=1),
    )
    s = signers(f'site-a valid-after="20260101Z",valid-before="20270101Z" {A.openssh_line()}\n')
    s.check("site-a", "x", A, after + 10, source="f")
    with pytest.raises(VerificationError) as info:
        s.check("site-a", "x", A, before + 10, source="f")
    assert info.value.code == "key-revoked"
    with pytest.raises(VerificationError) as info:
        s.check("site-a", "x", A, after - 10, source="f")
    assert info.value.code == "key-not-yet-valid"


def test_cert_authority_lines_never_match_plain_keys() -> None:
    s = signers(f"site-a cert-authority {A.openssh_line()}\n")
    with pytest.raises(VerificationError):
        s.check("site-a", "x", A, 0, source="f")


def test_other_key_types_are_ignored() -> None:
    s = signers("site-x ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n" + f"site-a {A.openssh_line()}\n")
    assert len(s.entries) == 1


@pytest.mark.parametrize(
    "line",
    [
        "site-a",
        'site-a namespaces="unterminated ' + A.openssh_line(),
        "site-a bogus=1 " + A.openssh_line(),
        'site-a valid-after="2026" ' + A.openssh_line(),
        "site-a ssh-ed25519 !!!notbase64",
    ],
    # fixed ids: a random key in a test's name differs between xdist workers
    ids=["no-key", "unterminated-quote", "unknown-option", "bad-valid-after", "bad-base64"],
)
def test_malformed_lines(line: str) -> None:
    with pytest.raises(MalformedInputError):
        parse_allowed_signers(line + "\n")


def test_format_round_trips() -> None:
    entries = parse_allowed_signers(
        f'site-a namespaces="flsilo-bundle",valid-before="20270101000000Z" {A.openssh_line()}\n'
    )
    again = parse_allowed_signers(entries[0].format() + "\n")
    assert again[0].key == entries[0].key and again[0].valid_before == entries[0].valid_before
