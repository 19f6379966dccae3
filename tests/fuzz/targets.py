"""Fuzz targets: each of flsilo's parsers of untrusted input, as a function of raw bytes.

Shared by the Hypothesis properties (``test_parsers.py``) and the atheris script
(``fuzz_parsers.py``). A target returns what the parser returned or raises what it raised;
the callers decide what counts as a failure (anything but a ``FlsiloError``).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path

from flsilo.format import manifest as mf
from flsilo.format.tensorfile import read_header
from flsilo.plans import federation
from flsilo.runtime.errors import KeyFileError
from flsilo.signing.keys import load_private_key, parse_public_line
from flsilo.signing.sshsig import parse_signature
from flsilo.signing.trust import parse_allowed_signers
from hub_kit.eventlog import EventLog

SEED_DIR = Path(__file__).resolve().parent / "seeds"


def safetensors_header(raw: bytes) -> object:
    """The strict safetensors header check, and the manifest inside it when there is one."""
    header, _ = read_header(io.BytesIO(raw), len(raw), "fuzz.safetensors")
    if mf.MANIFEST_KEY in header.metadata:
        return mf.decode(header.metadata, "fuzz.safetensors")
    return header


def manifest(raw: bytes) -> object:
    text = raw.decode("utf-8", "replace")
    return mf.decode({mf.MANIFEST_KEY: text}, "fuzz.safetensors")


def sshsig(raw: bytes) -> object:
    return parse_signature(raw, source="fuzz.sig")


def allowed_signers(raw: bytes) -> object:
    return parse_allowed_signers(raw.decode("utf-8", "replace"), source="allowed_signers")


def _through_file(name: str, raw: bytes, parse: Callable[[Path], object]) -> object:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        return parse(path)


def event_log(raw: bytes) -> object:
    return _through_file("events.jsonl", raw, lambda p: EventLog(p).read())


def federation_toml(raw: bytes) -> object:
    return _through_file(federation.FEDERATION_FILE, raw, federation.load)


def public_key(raw: bytes) -> object:
    return parse_public_line(raw.decode("utf-8", "replace"), source="hub.pub")


def _no_passphrase(path: Path) -> bytes:
    # An encrypted key stops here: the KDF cost of a hostile key is the owner's own choice.
    raise KeyFileError("fuzz: passphrase not available", path=path, code="passphrase-required")


def private_key(raw: bytes) -> object:
    return _through_file("key", raw, lambda p: load_private_key(p, _no_passphrase))


def seed_inputs() -> list[tuple[str, bytes]]:
    """Raw hostile files kept as fuzz seeds (``tests/fuzz/seeds``): each once broke a parser."""
    return [(p.name, p.read_bytes()) for p in sorted(SEED_DIR.glob("*")) if p.is_file()]


def genuine_inputs(tmp: Path) -> dict[str, bytes]:
    """One genuine input per target, made with flsilo's own writers."""
    import numpy as np

    from flsilo.format.artifact import write_artifact
    from flsilo.format.tensorfile import RawTensor
    from flsilo.signing.keys import generate_key, write_new_key
    from tests.hostile.test_corpus import bundle_manifest

    key = generate_key()
    write_new_key(tmp / "k", key, None, "fuzz")
    out = tmp / "b.safetensors"
    write_artifact(
        out,
        {"w": RawTensor.from_numpy(np.zeros(3, dtype=np.float32))},
        bundle_manifest(),
        key,
    )
    header_len = int.from_bytes(out.read_bytes()[:8], "little")
    return {
        "safetensors header": out.read_bytes()[: 8 + header_len] + b"\0" * 12,
        "SSHSIG armor": out.with_name(out.name + ".sig").read_bytes(),
        "public key (kit hub.pub)": (tmp / "k.pub").read_bytes(),
        "private key": (tmp / "k").read_bytes(),
    }
