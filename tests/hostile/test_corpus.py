"""Hostile corpus: every malformed, tampered or foreign file gets one clear line, the right
exit code, and changes nothing on disk."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from flsilo.format import manifest as mf
from flsilo.format.artifact import write_artifact
from flsilo.format.tensorfile import MAX_HEADER_BYTES, RawTensor
from flsilo.signing.keys import generate_key, load_private_key, write_new_key
from flsilo.signing.sshsig import sign_digest
from flsilo.signing.trust import SignerEntry
from tests.conftest import tree_digest

PLAN = mf.Plan(local_epochs=1, batch_size=8)


def bundle_manifest(site: str = "site-a", **changes: object) -> mf.Manifest:
    m = mf.Manifest(
        kind="bundle",
        format_version=mf.FORMAT_VERSION,
        federation="fed",
        round=0,
        created_at="2026-11-22T00:00:00Z",
        software={"flsilo": "test"},
        model=mf.ModelInfo("logreg", "0" * 64, ("a", "b"), (3,)),
        bundle=mf.BundleInfo(
            site=site,
            base_package_sha256="1" * 64,
            num_samples=10,
            plan=PLAN,
            metrics_global=None,
            metrics_trained=None,
        ),
    )
    return mf.Manifest(**{**m.__dict__, **changes})


TENSORS = {
    "weight": RawTensor.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3)),
    "bias": RawTensor.from_numpy(np.array([0.5, -0.5], dtype=np.float32)),
}


class Corpus:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = root / "files"
        self.files.mkdir()
        keys = root / "keys"
        self.site_pub = write_new_key(keys / "site-a", generate_key(), None, "site-a")
        self.other_pub = write_new_key(keys / "site-b", generate_key(), None, "site-b")
        self.key = load_private_key(keys / "site-a", lambda _p: b"")
        self.other_key = load_private_key(keys / "site-b", lambda _p: b"")
        self.stranger = generate_key()
        lines = [
            SignerEntry("site-a", self.site_pub, namespaces="flsilo-bundle").format(),
            SignerEntry("site-b", self.other_pub, namespaces="flsilo-bundle").format(),
            SignerEntry(
                "site-r", self.site_pub, namespaces="flsilo-bundle", valid_before=1
            ).format(),
        ]
        self.signers = root / "allowed_signers"
        self.signers.write_text("\n".join(lines) + "\n")

    def good(self, name: str = "good.safetensors", **changes: object) -> Path:
        path = self.files / name
        write_artifact(path, TENSORS, bundle_manifest(**changes), self.key)
        return path

    def raw(
        self, name: str, data: bytes, key: object = None, namespace: str = "flsilo-bundle"
    ) -> Path:
        """Arbitrary bytes, validly signed, so only the structure can be blamed."""
        path = self.files / name
        path.write_bytes(data)
        Path(f"{path}.sig").write_bytes(
            sign_digest(key or self.key, namespace, hashlib.sha256(data).digest())
        )
        return path


def header_file(header: dict, data: bytes, pad: bool = True) -> bytes:
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def meta(**changes: object) -> dict:
    return {"flsilo.manifest": mf.encode(bundle_manifest(**changes))}


F32_6 = np.arange(6, dtype=np.float32).tobytes()


def deep_file(depth: int) -> bytes:
    """A header whose first value nests ``depth`` arrays deep (the attack run's repro)."""
    text = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _structural() -> list[tuple[str, Callable[[Corpus], Path], int, str]]:
    w = {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}
    cases: list[tuple[str, Callable[[Corpus], Path], int, str]] = [
        (
            "truncated",
            lambda c: c.raw("t.safetensors", c.good().read_bytes()[:-5]),
            4,
            "bad-length",
        ),
        (
            "trailing bytes",
            lambda c: c.raw("tb.safetensors", c.good().read_bytes() + b"\0\0\0\0"),
            4,
            "bad-length",
        ),
        ("tiny file", lambda c: c.raw("tiny.safetensors", b"\x01\x02"), 4, "truncated"),
        (
            "header beyond file",
            lambda c: c.raw("hb.safetensors", struct.pack("<Q", 4000) + b"{}"),
            4,
            "truncated",
        ),
        (
            "header of hundreds of MB",
            lambda c: c.raw("huge.safetensors", struct.pack("<Q", 300 << 20) + b"{" + b" " * 64),
            4,
            "header-too-large",
        ),
        (
            "not JSON",
            lambda c: c.raw("nj.safetensors", struct.pack("<Q", 8) + b"{notjson"),
            4,
            "bad-structure",
        ),
        (
            "not UTF-8",
            lambda c: c.raw("nu.safetensors", struct.pack("<Q", 8) + b"{\xff\xfe    }"),
            4,
            "bad-structure",
        ),
        (
            "duplicate JSON keys",
            lambda c: c.raw("dup.safetensors", struct.pack("<Q", 0) + b""),
            4,
            "bad-structure",
        ),  # replaced below
        (
            "overlapping offsets",
            lambda c: c.raw(
                "ov.safetensors",
                header_file(
                    {
                        "__metadata__": meta(),
                        "a": w,
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
                    },
                    F32_6,
                ),
            ),
            4,
            "bad-offsets",
        ),
        (
            "gap between tensors",
            lambda c: c.raw(
                "gap.safetensors",
                header_file(
                    {
                        "__metadata__": meta(),
                        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
                    },
                    F32_6,
                ),
            ),
            4,
            "bad-offsets",
        ),
        (
            "size not dtype x shape",
            lambda c: c.raw(
                "sz.safetensors",
                header_file(
                    {
                        "__metadata__": meta(),
                        "a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 24]},
                    },
                    F32_6,
                ),
            ),
            4,
            "bad-size",
        ),
        (
            "unknown dtype",
            lambda c: c.raw(
                "dt.safetensors",
                header_file(
                    {
                        "__metadata__": meta(),
                        "a": {"dtype": "Q7", "shape": [6], "data_offsets": [0, 24]},
                    },
                    F32_6,
                ),
            ),
            4,
            "bad-dtype",
        ),
        (
            "empty tensor name",
            lambda c: c.raw("en.safetensors", header_file({"__metadata__": meta(), "": w}, F32_6)),
            4,
            "bad-name",
        ),
        (
            "NUL in tensor name",
            lambda c: c.raw(
                "nul.safetensors", header_file({"__metadata__": meta(), "a\x00b": w}, F32_6)
            ),
            4,
            "bad-name",
        ),
        (
            "missing manifest",
            lambda c: c.raw("mm.safetensors", header_file({"a": w}, F32_6)),
            4,
            "no-manifest",
        ),
        (
            "extra metadata",
            lambda c: c.raw(
                "em.safetensors",
                header_file({"__metadata__": {**meta(), "extra": "1"}, "a": w}, F32_6),
            ),
            4,
            "extra-metadata",
        ),
        (
            "wrong manifest version",
            lambda c: c.raw(
                "wv.safetensors",
                header_file(
                    {
                        "__metadata__": {
                            "flsilo.manifest": mf.encode(bundle_manifest()).replace(
                                f'"format_version":{mf.FORMAT_VERSION}', '"format_version":1'
                            )
                        },
                        "a": w,
                    },
                    F32_6,
                ),
            ),
            4,
            "manifest-version",
        ),
        (
            "manifest with unknown field",
            lambda c: c.raw(
                "uf.safetensors",
                header_file(
                    {
                        "__metadata__": {
                            "flsilo.manifest": mf.encode(bundle_manifest())[:-1] + ',"x":1}'
                        },
                        "a": w,
                    },
                    F32_6,
                ),
            ),
            4,
            "bad-manifest",
        ),
        (
            "header nested 1000 deep",
            lambda c: c.raw("deep.safetensors", deep_file(1000)),
            4,
            "too-deep",
        ),
        (
            "manifest nested 1000 deep",
            lambda c: c.raw(
                "mdeep.safetensors",
                header_file(
                    {"__metadata__": {"flsilo.manifest": "[" * 1000 + "]" * 1000}, "a": w}, F32_6
                ),
            ),
            4,
            "too-deep",
        ),
        (
            "unpaired surrogate in a tensor name",
            lambda c: c.raw(
                "sur.safetensors",
                header_file({"__metadata__": meta(), "\ud800": w}, F32_6),
            ),
            4,
            "bad-structure",
        ),
        (
            "created_at not a time",
            lambda c: c.raw(
                "ca.safetensors",
                header_file(
                    {
                        "__metadata__": {
                            "flsilo.manifest": mf.encode(bundle_manifest()).replace(
                                '"2026-11-22T00:00:00Z"', '"x"'
                            )
                        },
                        "a": w,
                    },
                    F32_6,
                ),
            ),
            4,
            "bad-manifest",
        ),
        (
            "created_at empty",
            lambda c: c.raw(
                "ce.safetensors",
                header_file(
                    {
                        "__metadata__": {
                            "flsilo.manifest": mf.encode(bundle_manifest()).replace(
                                '"2026-11-22T00:00:00Z"', '""'
                            )
                        },
                        "a": w,
                    },
                    F32_6,
                ),
            ),
            4,
            "bad-manifest",
        ),
        (
            "NaN weights",
            lambda c: c.raw(
                "nan.safetensors",
                header_file(
                    {"__metadata__": meta(), "a": w},
                    np.array([0, 1, np.nan, 3, 4, 5], np.float32).tobytes(),
                ),
            ),
            4,
            "non-finite",
        ),
        (
            "Inf weights (bf16)",
            lambda c: c.raw(
                "inf.safetensors",
                header_file(
                    {
                        "__metadata__": meta(),
                        "a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
                    },
                    np.array([0x3F80, 0x7F80], np.uint16).tobytes(),
                ),
            ),
            4,
            "non-finite",
        ),
    ]
    dup_header = (
        b'{"__metadata__":'
        + json.dumps(meta()).encode()
        + b',"a":'
        + json.dumps(w).encode()
        + b',"a":'
        + json.dumps(w).encode()
        + b"}"
    )
    dup_header += b" " * (-len(dup_header) % 8)
    cases[7] = (
        "duplicate JSON keys",
        lambda c: c.raw("dup.safetensors", struct.pack("<Q", len(dup_header)) + dup_header + F32_6),
        4,
        "bad-structure",
    )
    return cases


def _signatures() -> list[tuple[str, Callable[[Corpus], Path], int, str]]:
    def swapped(c: Corpus) -> Path:
        a = c.good("a.safetensors")
        b = c.good("b.safetensors", site="site-b")
        Path(f"{b}.sig").write_bytes(Path(f"{a}.sig").read_bytes())
        return b

    def over_other(c: Corpus) -> Path:
        a = c.good("x.safetensors")
        other = c.good("y.safetensors", round=3)
        Path(f"{a}.sig").write_bytes(Path(f"{other}.sig").read_bytes())
        return a

    def missing_sig(c: Corpus) -> Path:
        a = c.good("ms.safetensors")
        Path(f"{a}.sig").unlink()
        return a

    def tampered_byte(c: Corpus) -> Path:
        a = c.good("tb2.safetensors")
        data = bytearray(a.read_bytes())
        data[-3] ^= 0x01
        a.write_bytes(bytes(data))
        return a

    return [
        (
            "wrong namespace",
            lambda c: c.raw(
                "ns.safetensors", c.good("ns0.safetensors").read_bytes(), namespace="flsilo-package"
            ),
            3,
            "wrong-namespace",
        ),
        (
            "unknown key",
            lambda c: c.raw(
                "uk.safetensors", c.good("uk0.safetensors").read_bytes(), key=c.stranger
            ),
            3,
            "unknown-signer",
        ),
        ("revoked key", lambda c: c.good("rv.safetensors", site="site-r"), 3, "key-revoked"),
        (
            "signed by another site",
            lambda c: c.raw(
                "imp.safetensors", c.good("imp0.safetensors").read_bytes(), key=c.other_key
            ),
            3,
            "principal-mismatch",
        ),
        ("signature over another file", over_other, 3, "bad-signature"),
        ("signatures swapped between bundles", swapped, 3, "bad-signature"),
        ("missing .sig", missing_sig, 3, "missing-signature"),
        ("one byte changed", tampered_byte, 3, "bad-signature"),
        (
            "garbage .sig",
            lambda c: (
                Path(f"{c.good('gs.safetensors')}.sig").write_bytes(b"not a signature"),
                c.files / "gs.safetensors",
            )[1],
            4,
            "signature-malformed",
        ),
    ]


CASES = _structural() + _signatures()


@pytest.mark.parametrize("make, exit_code, code", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_hostile_file(
    tmp_path: Path, cli, make: Callable[[Corpus], Path], exit_code: int, code: str
) -> None:
    corpus = Corpus(tmp_path)
    target = make(corpus)
    before = tree_digest(tmp_path)
    result = cli("verify", target, "--signers", corpus.signers)
    assert result.code == exit_code, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert f"error[{code}]" in lines[0]
    assert target.name in lines[0]
    assert "hint:" in lines[0]
    assert "Traceback" not in result.err + result.out
    assert tree_digest(tmp_path) == before


def test_good_file_verifies(tmp_path: Path, cli) -> None:
    corpus = Corpus(tmp_path)
    result = cli("verify", corpus.good(), "--signers", corpus.signers, "--json")
    assert result.code == 0
    doc = json.loads(result.out)
    assert doc["ok"] and doc["files"][0]["site"] == "site-a"


def test_header_size_is_checked_before_allocation() -> None:
    from flsilo.format.tensorfile import read_header_length
    from flsilo.runtime.errors import MalformedInputError

    with pytest.raises(MalformedInputError) as info:
        read_header_length(struct.pack("<Q", MAX_HEADER_BYTES + 1), 10**12, "f")
    assert info.value.code == "header-too-large"


def test_any_safetensors_reader_loads_an_artifact(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    loaded = load_file(str(Corpus(tmp_path).good()))
    assert loaded["weight"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_what_safetensors_refuses_flsilo_refuses(tmp_path: Path) -> None:
    """An unpaired surrogate escape: the reference loader refuses the file, and so do we."""
    from safetensors.numpy import load_file

    from flsilo.format.tensorfile import parse_header
    from flsilo.runtime.errors import MalformedInputError

    w = {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}
    data = header_file({"\ud800": w}, F32_6)  # json.dumps writes it as the escape \\ud800
    path = tmp_path / "s.safetensors"
    path.write_bytes(data)
    with pytest.raises(Exception):  # noqa: B017 - whatever the Rust loader raises
        load_file(str(path))
    (header_len,) = struct.unpack("<Q", data[:8])
    with pytest.raises(MalformedInputError):
        parse_header(data[8 : 8 + header_len], len(data), "s")
    paired = header_file({"\U0001f600": w}, F32_6)  # written as a \\ud83d\\ude00 pair
    path.write_bytes(paired)
    assert list(load_file(str(path))) == ["\U0001f600"]
    (header_len,) = struct.unpack("<Q", paired[:8])
    assert (
        parse_header(paired[8 : 8 + header_len], len(paired), "p").tensors[0].name == "\U0001f600"
    )
