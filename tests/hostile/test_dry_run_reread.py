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
    from flsilo.format.tensorfile import TensorInfo

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


def test_a_statistics_reread_does_not_wait_on_a_fifo_or_follow_a_link(tmp_path: Path) -> None:
    """A statistics round's gates judge the class counts, reread from the verified file (in a
    dry run, the inbox file itself): a FIFO swapped in since is refused, not waited on, and a
    link is not followed."""
    import threading

    from flsilo.format.artifact import verify_file
    from flsilo.format.tensorsets import STAT_CLASS_COUNTS
    from flsilo.runtime.errors import FlsiloError
    from flsilo.signing.trust import AllowedSigners
    from hub_kit.intake import read_tensors
    from tests.conftest import build_federation

    fed = build_federation(tmp_path / "fed", "closed-form", "mlp:hidden=16")
    bundle = fed.bundles["site-a"]
    verified = verify_file(bundle, AllowedSigners.load(fed.hub / "allowed_signers"))
    assert read_tensors(verified, (STAT_CLASS_COUNTS,))[STAT_CLASS_COUNTS]
    kept = tmp_path / "kept.safetensors"
    bundle.rename(kept)
    bundle.symlink_to(kept)
    with pytest.raises(FlsiloError) as caught:
        read_tensors(verified, (STAT_CLASS_COUNTS,))
    assert caught.value.code == "not-regular-file"
    bundle.unlink()
    os.mkfifo(bundle)  # no writer: a blocking open would wait forever
    outcome: list[BaseException | None] = []

    def reread() -> None:
        try:
            read_tensors(verified, (STAT_CLASS_COUNTS,))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 (handed to the test's thread)
            outcome.append(exc)

    thread = threading.Thread(target=reread, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # let the blocked open go (a reader is waiting), then fail
        os.close(os.open(bundle, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail("the reread waited on a FIFO")
    assert isinstance(outcome[0], FlsiloError) and outcome[0].code == "not-regular-file"
