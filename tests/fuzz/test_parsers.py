"""Every parser of untrusted bytes raises only flsilo's own errors, quickly and in bounded memory.

One property per parser, on arbitrary bytes and on hostile structures (deep nesting, huge
numbers, lone surrogates, absurd shapes, oversized fields). The default tier runs a modest
number of examples (ten times as many under the ``ci`` profile: tests/conftest.py); the slow
tier (``pytest -m slow``) runs the same properties with a larger budget, and
``tests/fuzz/fuzz_parsers.py`` runs them under atheris for as long as you like.
"""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flsilo.runtime.errors import FlsiloError
from tests.conftest import examples
from tests.fuzz import targets

# A parser may allocate a small multiple of its input, never megabytes for a few bytes.
ALLOCATION_LIMIT = 8 * 1024 * 1024
DEFAULT_EXAMPLES = int(os.environ.get("FLSILO_FUZZ_EXAMPLES", "0")) or examples(15)

fuzz_settings = settings(
    max_examples=DEFAULT_EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# Any text UTF-8 can carry: every code point but the surrogates. ``st.text()``'s default
# alphabet is the same set, named by codec; Hypothesis works a codec's set out by encoding
# each of the 1.1 million code points, about 1.5 s of CPU in every fresh clone.
UNICODE = st.characters(exclude_categories=("Cs",))


def text(*, max_size: int) -> st.SearchStrategy[str]:
    return st.text(UNICODE, max_size=max_size)


def only_flsilo_errors(parse: Callable[[bytes], object], data: bytes) -> None:
    """Run ``parse``; anything but success or a FlsiloError fails, as does a large allocation."""
    tracemalloc.start()
    try:
        parse(data)
    except FlsiloError as err:
        assert err.code, "every error carries a stable code"
        assert err.message, "every error says what happened"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < ALLOCATION_LIMIT + 64 * len(data), f"parser allocated {peak} bytes"


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# Hostile JSON texts that have broken parsers before: recursion, big numbers, odd strings.
hostile_json = st.one_of(
    st.integers(min_value=100, max_value=20_000).map(nested),
    st.integers(min_value=100, max_value=20_000).map(nested_objects),
    st.sampled_from(
        [
            "1" * 5000,
            "1e999999",
            "-1e999999",
            '"\\ud800"',
            '"\\udfff\\ud800"',
            "NaN",
            "Infinity",
            '{"a":1,"a":2}',
            '{"": {}}',
            "[" + ",".join(["{}"] * 2000) + "]",
            '"' + "\\u0000" * 1000 + '"',
        ]
    ),
)


def safetensors_bytes(header: str, data: bytes = b"") -> bytes:
    raw = header.encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(raw)) + raw + data


def tensor_header(name: str, dtype: str, shape: object, offsets: object, meta: object) -> str:
    entry = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    header: dict[str, object] = {name: entry}
    if meta is not None:
        header["__metadata__"] = meta
    return json.dumps(header)


hostile_headers = st.one_of(
    hostile_json.map(lambda text: safetensors_bytes('{"x":' + text + "}")),
    hostile_json.map(lambda text: safetensors_bytes('{"__metadata__":{"k":' + text + "}}")),
    st.builds(
        tensor_header,
        name=st.one_of(text(max_size=8), st.just("\ud800"), st.just("a\x00b")),
        dtype=st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "X", ""]),
        shape=st.one_of(
            st.lists(st.integers(min_value=-2, max_value=2**63), max_size=6),
            st.just([2**62, 2**62, 2**62]),
            st.just("3"),
        ),
        offsets=st.one_of(
            st.lists(st.integers(min_value=-1, max_value=2**64), min_size=0, max_size=3),
            st.just([0, 2**63]),
        ),
        meta=st.one_of(
            st.none(),
            st.dictionaries(text(max_size=4), text(max_size=8), max_size=3),
            st.just({"flsilo.manifest": nested_objects(3000)}),
            st.just({"k": 1}),
        ),
    ).map(safetensors_bytes),
)

hostile_manifests = st.one_of(
    hostile_json,
    st.builds(
        lambda kind, version, extra: json.dumps({"kind": kind, "format_version": version, **extra}),
        kind=st.sampled_from(["bundle", "package", "x", ""]),
        version=st.one_of(st.integers(), text(max_size=3), st.none()),
        extra=st.dictionaries(
            st.sampled_from(["federation", "round", "created_at", "model", "bundle", "package"]),
            st.one_of(st.none(), st.integers(), text(max_size=5), st.lists(st.integers())),
            max_size=6,
        ),
    ),
)

ssh_armor = st.builds(
    lambda body: (
        "-----BEGIN SSH SIGNATURE-----\n" + body + "\n-----END SSH SIGNATURE-----\n"
    ).encode("utf-8", "surrogatepass"),
    st.one_of(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"),
        st.binary(max_size=512).map(lambda b: __import__("base64").b64encode(b).decode()),
        st.binary(max_size=64).map(
            lambda b: __import__("base64").b64encode(b"SSHSIG" + b).decode()
        ),
    ),
)

signers_lines = st.lists(
    st.one_of(
        text(max_size=80),
        st.builds(
            lambda p, o, k: f"{p} {o} {k}",
            st.sampled_from(["site-a", "*", "a,b,!c", '"quoted', ""]),
            st.sampled_from(
                [
                    'namespaces="flsilo-bundle"',
                    'valid-after="20260101"',
                    'valid-before="99999999999999"',
                    'namespaces="' + "x," * 500 + '"',
                    "cert-authority",
                    'valid-after="2026013"',
                ]
            ),
            st.sampled_from(
                ["ssh-ed25519 AAAA", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==", "ssh-rsa AAAA"]
            ),
        ),
    ),
    max_size=8,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))

event_lines = st.lists(
    st.one_of(
        hostile_json,
        st.builds(
            lambda seq, ev, prev: json.dumps(
                {"seq": seq, "time": "2026-11-23T00:00:00Z", "event": ev, "prev": prev}
            ),
            st.one_of(st.integers(min_value=-1, max_value=3), text(max_size=2)),
            st.sampled_from(["enroll", "revoke", "accept", "aggregate", "init", "x"]),
            st.one_of(st.just("0" * 64), text(max_size=4)),
        ),
    ),
    max_size=5,
).map(lambda lines: ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))

HOSTILE_TOML = [  # each parsed once by its own test below: deep, wide, wrong and overflowing
    "a = " + nested(5000),
    "a = {" * 3000,
    "federation = 1",
    'federation = "x"\nmodel = "logreg"\nclasses = []\ninput_shape = [-1]',
    "[plan]\nlocal_epochs = [" + "1," * 10000 + "]",
    "x = 1e999",
]
toml_texts = st.one_of(
    text(max_size=300),
    st.sampled_from(HOSTILE_TOML[2:4] + HOSTILE_TOML[5:]),  # the small ones, mixed with text
).map(lambda text: text.encode("utf-8", "surrogatepass"))

public_key_lines = st.one_of(
    text(max_size=200),
    st.binary(max_size=200).map(
        lambda b: "ssh-ed25519 " + __import__("base64").b64encode(b).decode()
    ),
    st.binary(max_size=200).map(
        lambda b: "ecdsa-sha2-nistp256 " + __import__("base64").b64encode(b).decode()
    ),
).map(lambda text: text.encode("utf-8", "surrogatepass"))

private_key_texts = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=600).map(
        lambda b: (
            "-----BEGIN OPENSSH PRIVATE KEY-----\n"
            + __import__("base64").b64encode(b"openssh-key-v1\x00" + b).decode()
            + "\n-----END OPENSSH PRIVATE KEY-----\n"
        ).encode()
    ),
)

PARSERS: dict[str, tuple[Callable[[bytes], object], st.SearchStrategy[bytes]]] = {
    "safetensors header": (targets.safetensors_header, hostile_headers),
    "manifest": (
        targets.manifest,
        hostile_manifests.map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
    "SSHSIG armor": (targets.sshsig, ssh_armor),
    "allowed_signers": (targets.allowed_signers, signers_lines),
    "event log": (targets.event_log, event_lines),
    "federation.toml": (targets.federation_toml, toml_texts),
    "public key (kit hub.pub)": (targets.public_key, public_key_lines),
    "private key": (targets.private_key, private_key_texts),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@fuzz_settings
@given(data=st.data())
def test_arbitrary_bytes(name: str, data: st.DataObject) -> None:
    parse, _ = PARSERS[name]
    only_flsilo_errors(parse, data.draw(st.binary(max_size=2048), label="bytes"))


@pytest.mark.parametrize("name", sorted(PARSERS))
@fuzz_settings
@given(data=st.data())
def test_hostile_structures(name: str, data: st.DataObject) -> None:
    parse, strategy = PARSERS[name]
    only_flsilo_errors(parse, data.draw(strategy, label="hostile"))


@pytest.mark.parametrize("text", HOSTILE_TOML, ids=range(len(HOSTILE_TOML)))
def test_hostile_federation_toml(text: str) -> None:
    """The large hostile federation.toml texts, each once (as samples of the property above,
    Hypothesis drew them again and again: tomllib takes a while over 5,000 brackets)."""
    only_flsilo_errors(targets.federation_toml, text.encode())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_hostile_structures_long(name: str, data: st.DataObject) -> None:
    parse, strategy = PARSERS[name]
    raw = data.draw(st.one_of(strategy, st.binary(max_size=4096)), label="input")
    only_flsilo_errors(parse, raw)


def test_hostile_corpus_files_give_only_flsilo_errors() -> None:
    """The fuzz seeds on disk (the hostile corpus' raw files) stay parseable into clean errors."""
    seeds = targets.seed_inputs()
    assert seeds, "the seed corpus is empty"
    for name, raw in seeds:
        for parse, _ in PARSERS.values():
            try:
                only_flsilo_errors(parse, raw)
            except AssertionError as exc:  # pragma: no cover - reported with the seed's name
                raise AssertionError(f"seed {name}: {exc}") from exc


def test_targets_accept_genuine_inputs(tmp_path: Path) -> None:
    """The fuzz targets are real: they parse genuine files without error."""
    for name, raw in targets.genuine_inputs(tmp_path).items():
        parse = PARSERS[name][0]
        parse(raw)


def test_deep_nesting_is_refused_with_its_own_code() -> None:
    """A header nested 1,000+ levels deep is refused cleanly, before anything else is read."""
    for text in (nested(1000), nested_objects(1000), nested(100_000)):
        raw = safetensors_bytes('{"x":' + text + "}")
        with pytest.raises(FlsiloError) as info:
            targets.safetensors_header(raw)
        assert info.value.exit_code == 4
    with pytest.raises(FlsiloError):
        targets.manifest(nested_objects(5000).encode())
