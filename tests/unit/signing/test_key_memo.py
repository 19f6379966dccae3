"""A private key is loaded once per process for the same file bytes, and never handed back
for a file that changed: another key, or damage, is read from the file as it is now."""

from __future__ import annotations

from pathlib import Path

import pytest

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import KeyFileError
from flsilo.signing.keys import (
    generate_key,
    load_private_key,
    private_key_bytes,
    public_of,
    sign_ssh,
)
from flsilo.signing.sshwire import WireReader


def _no_passphrase(path: Path) -> bytes:
    raise AssertionError(f"{path} is not encrypted: no passphrase is asked")


def _raw(key: object) -> bytes:
    return key.public_key().public_bytes_raw()  # type: ignore[attr-defined]


def test_a_key_file_is_loaded_once_and_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "site"
    first, second = generate_key(), generate_key()
    path.write_bytes(private_key_bytes(first, None))
    loaded = load_private_key(path, _no_passphrase)
    assert _raw(loaded) == _raw(first)
    assert load_private_key(path, _no_passphrase) is loaded
    path.write_bytes(private_key_bytes(second, None))  # the same path, another key
    assert _raw(load_private_key(path, _no_passphrase)) == _raw(second)
    path.write_bytes(private_key_bytes(first, None)[:-40] + b"\n")  # damaged after a load
    with pytest.raises(KeyFileError) as refused:
        load_private_key(path, _no_passphrase)
    assert refused.value.code == Code.KEY_MALFORMED


def test_a_refused_key_is_refused_on_every_load(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "p384"
    path.write_bytes(private_key_bytes(ec.generate_private_key(ec.SECP384R1()), None))
    for _ in range(2):
        with pytest.raises(KeyFileError) as refused:
            load_private_key(path, _no_passphrase)
        assert refused.value.code == Code.KEY_TYPE


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
def test_a_good_signature_checked_again_is_good_and_any_other_bytes_are_checked(
    key_type: str,
) -> None:
    key, other = generate_key(key_type), generate_key(key_type)
    public = public_of(key)
    data = b"SSHSIG" + bytes(range(64))
    reader = WireReader(sign_ssh(key, data))
    sig_type, raw_sig = reader.text(), reader.string()
    for _ in range(2):
        assert public.verify(sig_type, raw_sig, data)
    changed = bytearray(data)
    changed[-1] ^= 1
    assert not public.verify(sig_type, raw_sig, bytes(changed))
    flipped = bytearray(raw_sig)
    flipped[len(flipped) // 2] ^= 1
    for _ in range(2):
        assert not public.verify(sig_type, bytes(flipped), data)
    assert not public_of(other).verify(sig_type, raw_sig, data)
    assert public.verify(sig_type, raw_sig, data)
