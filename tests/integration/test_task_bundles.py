"""Classification moved onto the task protocol keeps its bytes: a site trains the same bundles
and ``evaluate --json`` prints the same figures as the code did before tasks existed.

``tests/fixtures/task_bundles.json`` was recorded (``record()`` below) from the commit before
``flsilo/tasks`` was introduced. A bundle's digest covers its tensors' bytes and its manifest
without the wall-clock ``timings``; keys are the golden round's, times pinned.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from flsilo.cli.app import run
from flsilo.format import manifest as mf
from flsilo.signing.keys import load_public_key

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures"
KEYS = FIXTURE / "golden_round" / "keys"
EXPECTED = FIXTURE / "task_bundles.json"
EPOCH = "1790000000"
PINNED_SOFTWARE = {"flsilo": "golden", "python": "3"}

DIGITS = ["--classes", ",".join(str(d) for d in range(10)), "--input-shape", "1,8,8"]
SCENARIOS: dict[str, list[str]] = {
    "periodic": ["--model", "logreg", *DIGITS, "--schedule", "periodic:2"],
    "dp": ["--model", "logreg", *DIGITS,
           *"--schedule periodic:2 --dp-noise-multiplier 1.0 --dp-budget 20".split()],
    "closed-form": ["--model", "mlp", *DIGITS, "--schedule", "closed-form+periodic:1"],
    "images": "--model cnn --classes cat,dog --input-shape 3,8,8 --schedule periodic:2 "
    "--augment hflip".split(),
}  # fmt: skip


def _pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creation times, the interpreter's version and DP's secret sampling seed vary by run."""
    from site_kit import privacy

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    monkeypatch.setattr(privacy, "round_secret", lambda _work: bytes(32))
    monkeypatch.setattr(mf, "software_versions", lambda extra=None: PINNED_SOFTWARE | (extra or {}))


def _data(tmp: Path, scenario: str) -> Path:
    if scenario != "images":
        from sim_kit.datasets import load_digits

        x, y = load_digits()
        idx = np.random.default_rng(0).permutation(len(y))[:160]
        np.savez(tmp / "site.npz", x=x[idx], y=y[idx])
        return tmp / "site.npz"
    rng = np.random.default_rng(1)
    folder = tmp / "images"
    folder.mkdir()
    rows = ["path,label"]
    for i in range(24):
        label = ("cat", "dog")[i % 2]
        pixels = rng.integers(0, 120, (8, 8, 3), dtype=np.uint8) + (100 if i % 2 else 0)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def _bundle_digest(path: Path) -> str:
    from flsilo.format.artifact import scan_file

    scan = scan_file(path, data_digest=False)
    raw = path.read_bytes()
    manifest = json.loads(scan.header.metadata[mf.MANIFEST_KEY])
    manifest["bundle"].pop("timings")
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    digest.update(raw[scan.header.data_start :])
    return digest.hexdigest()


def _scenario(tmp: Path, scenario: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    keys = tmp / "keys"
    shutil.copytree(KEYS, keys)
    for key in keys.iterdir():
        key.chmod(0o600)
    hub = tmp / "hub"
    init = ["hub", "init", str(hub), "--federation", "fed", "--key", str(keys / "hub"),
            "--local-epochs", "1", "--batch-size", "16", "--lr", "0.1", "--min-sites", "1"]  # fmt: skip
    assert run([*init, *SCENARIOS[scenario]]) == 0
    pub = keys / "site-a.pub"
    fp = load_public_key(pub).fingerprint
    assert run(["hub", "enroll", str(hub), "site-a", str(pub), "--fingerprint", fp]) == 0
    assert run(["hub", "kit", str(hub), "site-a", "--out", str(tmp / "kit")]) == 0
    site = tmp / "site-a"
    data = _data(tmp, scenario)
    hub_fp = load_public_key(keys / "hub.pub").fingerprint
    site_init = ["site", "init", str(site), "--kit", str(tmp / "kit"), "--site-id", "site-a",
                 "--key", str(keys / "site-a"), "--hub-fingerprint", hub_fp, "--data", str(data)]  # fmt: skip
    assert run(site_init) == 0
    package = site / "packages" / "fed-r0000.safetensors"
    assert run(["train", str(package), "--site", str(site), "--device", "cpu"]) == 0
    bundle = site / "outbox" / "fed-r0000-site-a.safetensors"
    capsys.readouterr()
    assert run(["evaluate", str(package), "--site", str(site), "--data", str(data), "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    evaluation.pop("package")  # a temporary path
    return {"bundle": _bundle_digest(bundle), "evaluate": evaluation}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_classify_bundles_keep_their_bytes(
    scenario: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _pin(monkeypatch)
    got = _scenario(tmp_path, scenario, capsys)
    expected = json.loads(EXPECTED.read_text())[scenario]
    assert got["bundle"] == expected["bundle"]
    assert got["evaluate"] == expected["evaluate"]


def record() -> None:
    """Write the expected digests from the current code."""
    import tempfile

    out: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        _pin(monkeypatch)
        for scenario in SCENARIOS:
            with tempfile.TemporaryDirectory() as tmp:
                out[scenario] = _record_one(Path(tmp), scenario)
    EXPECTED.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


def _record_one(tmp: Path, scenario: str) -> dict[str, Any]:
    import contextlib
    import io

    class Capture:
        def __init__(self) -> None:
            self.buffer = io.StringIO()

        def readouterr(self) -> Any:
            text = self.buffer.getvalue()
            self.buffer.seek(0)
            self.buffer.truncate()
            return type("Captured", (), {"out": text})

    capture = Capture()
    with contextlib.redirect_stdout(capture.buffer):
        return _scenario(tmp, scenario, capture)  # type: ignore[arg-type]


if __name__ == "__main__":
    record()
