"""A dry run rereads inbox files it verified a moment before, for their update figures: a
file swapped since (a FIFO, a link) costs that round's figures, never a hang or a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hub_kit import gates
from hub_kit.streaming import Mapped
from tests.conftest import Federation


def test_a_fifo_or_a_link_is_refused_at_open_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "bundle.safetensors"
    os.mkfifo(fifo)  # no writer: a blocking open would wait forever
    with pytest.raises(OSError):
        Mapped(fifo, 0).chunk(_info(), 0, 1)
    link = tmp_path / "link.safetensors"
    (tmp_path / "secret").write_bytes(b"\0" * 64)
    link.symlink_to(tmp_path / "secret")
    with pytest.raises(OSError):
        Mapped(link, 0)


def _info():
    from flsilo.tensorfile import TensorInfo

    return TensorInfo("w", "F32", (1,), 0, 4)


def test_a_dry_run_whose_reread_fails_reports_without_figures(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation.carry()

    def swapped(*_args: object, **_kwargs: object) -> None:
        raise OSError("the file changed on the stick")

    monkeypatch.setattr(gates, "measure", swapped)
    dry = cli("aggregate", federation.hub, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    rows = json.loads(dry.out)["report"]["rows"]
    assert [r["verdict"] for r in rows] == ["accepted", "accepted"]
    assert all(r["cosine"] is None and r["update_norm"] is None for r in rows)
