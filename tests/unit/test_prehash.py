"""One read, both digests: the parallel reader and the start-up pass hash exactly the bytes.

The start-up pass (``flsilo.cli.prehash``) is used only for the file the verifier read,
unchanged; a file changed between the two reads is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flsilo.cli import prehash
from flsilo.format import artifact, readpass
from flsilo.format.artifact import scan_file, verify_file
from flsilo.format.tensorfile import RawTensor
from flsilo.runtime.errors import VerificationError
from flsilo.signing.keys import generate_key
from flsilo.signing.trust import AllowedSigners
from tests.conftest import examples
from tests.hostile.test_corpus import Corpus, bundle_manifest

settings_ = settings(
    max_examples=examples(12), suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _digests(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")
    return hashlib.sha256(data).hexdigest(), hashlib.sha256(data[start:]).hexdigest()


KEY = generate_key()


def _artifact(folder: Path, name: str, sizes: list[int], seed: int, key: object = KEY) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {
        f"t{i}": RawTensor.from_numpy(rng.standard_normal(n).astype(np.float32))
        for i, n in enumerate(sizes)
    }
    path = folder / name
    artifact.write_artifact(path, tensors, bundle_manifest(), key)  # type: ignore[arg-type]
    return path


@settings_
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    chunk=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_parallel_reader_digests_equal_hashlib(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    sizes: list[int],
    chunk: int,
    seed: int,
) -> None:
    # Small chunks, every chunk's jobs on the pool: many hand-offs per tensor.
    monkeypatch.setattr(artifact, "CHUNK_BYTES", chunk * 64)
    monkeypatch.setattr(readpass, "PARALLEL_MIN_BYTES", 0)
    folder = tmp_path_factory.mktemp("reader")
    path = _artifact(folder, "a.safetensors", sizes, seed)
    copy = folder / "copy.bin"
    with copy.open("wb") as out:
        scan = scan_file(path, copy_to=out)
    assert (scan.sha256, scan.data_sha256) == _digests(path)
    assert copy.read_bytes() == path.read_bytes()
    assert not scan.nonfinite


@settings_
@given(
    header_len=st.integers(0, 300),
    body=st.binary(max_size=4000),
    chunk=st.integers(1, 700),
    data=st.booleans(),
)
def test_startup_pass_digests_equal_hashlib(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    header_len: int,
    body: bytes,
    chunk: int,
    data: bool,
) -> None:
    monkeypatch.setattr(prehash, "CHUNK_BYTES", chunk)
    path = tmp_path_factory.mktemp("pre") / "f.safetensors"
    raw = header_len.to_bytes(8, "little") + body
    path.write_bytes(raw)
    prehash.start([str(path)], data=data)
    job = _claim(path)
    now = os.stat(path)
    start = 8 + header_len
    if start > len(raw):  # a header longer than the file: no digest, the verifier says why
        with pytest.raises(readpass.StaleDigests):
            job.digests(now, now, start)
        return
    file_digest, data_digest = job.digests(now, now, start)
    assert file_digest == hashlib.sha256(raw).digest()
    assert data_digest == (hashlib.sha256(raw[start:]).digest() if data else None)


def _claim(path: Path) -> prehash.Job:
    job = prehash.claim(path)
    if job is None:  # not started yet: wait for the worker to reach it, then claim
        prehash.start([str(path)], data=False)
        job = prehash.claim(path)
    assert job is not None
    job.done.wait()
    return job


def _started(path: Path) -> prehash.Job:
    """Start the pass for ``path``, wait for it, and leave it to be claimed by the verifier."""
    prehash.start([str(path)], data=False)
    job = prehash._jobs[os.path.abspath(path)]
    job.done.wait()
    return job


def test_startup_digest_is_used_when_the_file_is_unchanged(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    path = corpus.good()
    trust = AllowedSigners.load(corpus.signers)
    job = _started(path)
    assert job.file_digest == hashlib.sha256(path.read_bytes()).digest()
    job.file_digest = bytes(32)  # what the verifier checks is the early digest
    with pytest.raises(VerificationError):
        verify_file(path, trust, data_digest=False, early=prehash.claim(path))


def test_startup_digest_is_discarded_when_the_file_changed(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    path = corpus.good()
    trust = AllowedSigners.load(corpus.signers)
    job = _started(path)
    job.file_digest = bytes(32)  # a stale digest...
    os.utime(path)  # ...of a file touched since: its times changed, so it is hashed again
    verified = verify_file(path, trust, early=prehash.claim(path))
    assert (verified.sha256, verified.data_sha256) == _digests(path)


def test_startup_digest_of_a_replaced_file_is_not_used(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    path = corpus.good()
    _started(path)
    other = _artifact(corpus.files, "other.safetensors", [5, 7], seed=1, key=corpus.key)
    os.replace(other, path)  # another inode, other bytes, same name
    os.replace(artifact.sig_path(other), artifact.sig_path(path))
    early = prehash.claim(path)
    verified = verify_file(
        path, AllowedSigners.load(corpus.signers), data_digest=False, early=early
    )
    assert verified.sha256 == _digests(path)[0]
    assert verified.data_sha256 == ""


@pytest.mark.parametrize(
    ("argv", "files"),
    [
        (["flsilo", "verify", "a.safetensors", "--key", "k.safetensors"], ["a.safetensors"]),
        (["/bin/flsilo", "--threads", "2", "verify", "b.safetensors.sig"], ["b.safetensors"]),
        (
            ["flsilo", "-v", "verify", "--at", "20260101", "c.safetensors", "x.txt"],
            ["c.safetensors"],
        ),
        (["flsilo", "inspect", "a.safetensors"], []),
        (["pytest", "verify", "a.safetensors"], []),
    ],
)
def test_verify_targets_reads_only_flsilo_verify(argv: list[str], files: list[str]) -> None:
    assert prehash.verify_targets(argv) == files


def test_flsilo_verify_process_hashes_from_start(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    path = corpus.good()
    flsilo = shutil.which("flsilo") or str(Path(sys.executable).with_name("flsilo"))
    done = subprocess.run(
        [flsilo, "verify", str(path), "--signers", str(corpus.signers), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert _digests(path)[0] in json.dumps(report)


def test_flsilo_verify_process_fails_a_tampered_file(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    path = corpus.good()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    flsilo = shutil.which("flsilo") or str(Path(sys.executable).with_name("flsilo"))
    done = subprocess.run(
        [flsilo, "verify", str(path), "--signers", str(corpus.signers)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "bad-signature" in done.stdout + done.stderr
