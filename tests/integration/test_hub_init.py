"""hub init: pretrained starts, passphrase files, and refusals that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from flsilo.format.artifact import scan_file
from flsilo.models.registry import build_model
from flsilo.signing.keys import generate_key, write_new_key

ARGS = ["--federation", "fed", "--model", "logreg", "--classes", "a,b,c", "--input-shape", "4"]


def test_init_weights_become_the_round0_package(cli, tmp_path: Path) -> None:
    write_new_key(tmp_path / "hub", generate_key(), b"s3cret", "hub")
    (tmp_path / "pass").write_text("s3cret\n")
    model = build_model("logreg", (4,), 3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.25)
    save_file(model.state_dict(), str(tmp_path / "start.safetensors"))
    result = cli(
        "hub",
        "init",
        tmp_path / "hub-ws",
        *ARGS,
        "--key",
        tmp_path / "hub",
        "--passphrase-file",
        tmp_path / "pass",
        "--init-weights",
        tmp_path / "start.safetensors",
        "--json",
    )
    assert result.code == 0, result.err
    package = Path(json.loads(result.out)["package"])
    data = package.read_bytes()
    header = scan_file(package).header
    for t in header.tensors:
        values = torch.frombuffer(
            bytearray(data[header.data_start + t.begin : header.data_start + t.end]),
            dtype=torch.float32,
        )
        assert torch.all(values == 0.25)


def test_mismatched_init_weights_are_refused_and_nothing_is_created(cli, tmp_path: Path) -> None:
    write_new_key(tmp_path / "hub", generate_key(), None, "hub")
    save_file(
        {"0.weight": torch.zeros(3, 5), "0.bias": torch.zeros(3)},
        str(tmp_path / "wrong.safetensors"),
    )
    result = cli(
        "hub",
        "init",
        tmp_path / "hub-ws",
        *ARGS,
        "--key",
        tmp_path / "hub",
        "--init-weights",
        tmp_path / "wrong.safetensors",
    )
    assert result.code == 4 and "weights-mismatch" in result.err
    assert not (tmp_path / "hub-ws").exists()
    assert not any(p.name.startswith(".hub-ws") for p in tmp_path.iterdir())


def test_wrong_passphrase_file(cli, tmp_path: Path) -> None:
    write_new_key(tmp_path / "hub", generate_key(), b"right", "hub")
    (tmp_path / "pass").write_text("wrong\n")
    result = cli(
        "hub",
        "init",
        tmp_path / "hub-ws",
        *ARGS,
        "--key",
        tmp_path / "hub",
        "--passphrase-file",
        tmp_path / "pass",
    )
    assert result.code == 1 and "key-passphrase" in result.err
    assert not (tmp_path / "hub-ws").exists()


def test_bad_schedule_and_model_are_usage_errors(cli, tmp_path: Path) -> None:
    write_new_key(tmp_path / "hub", generate_key(), None, "hub")
    for extra in (["--schedule", "weekly"], ["--local-epochs", "1,2", "--schedule", "periodic:3"]):
        assert (
            cli("hub", "init", tmp_path / "h", *ARGS, "--key", tmp_path / "hub", *extra).code == 2
        )
    bad_model = [
        "--federation",
        "fed",
        "--model",
        "transformer",
        "--classes",
        "a,b",
        "--input-shape",
        "4",
    ]
    assert cli("hub", "init", tmp_path / "h", *bad_model, "--key", tmp_path / "hub").code == 2


def test_the_cosine_gate_is_a_federation_setting(cli, tmp_path: Path) -> None:
    write_new_key(tmp_path / "hub", generate_key(), None, "hub")
    base = ["hub", "init", tmp_path / "h", *ARGS, "--key", tmp_path / "hub", "--cosine-gate"]
    refused = cli(*base, "-1")
    assert refused.code == 2 and "cosine_gate (--cosine-gate)" in refused.err
    assert not (tmp_path / "h").exists()
    assert cli(*base, "0.25").code == 0
    assert "cosine_gate = 0.25" in (tmp_path / "h" / "federation.toml").read_text()
