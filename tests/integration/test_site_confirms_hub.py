"""The site confirms the hub as the hub confirms the site; workspaces survive being copied."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import digits_npz, fingerprint, make_key, tree_digest


def _hub_and_kit(root: Path, cli) -> Path:
    """keys/{hub,site-a,other}, a hub with site-a enrolled, and site-a's kit in root/kit."""
    keys = root / "keys"
    for name in ("hub", "site-a", "other"):
        if not (keys / name).exists():  # a test may have made one (an encrypted site key)
            make_key(keys / name)
    args = ["--federation", "fed", "--model", "logreg", "--classes", ",".join("0123456789")]
    init = cli("hub", "init", root / "hub", *args, "--input-shape", "1,8,8", "--key", keys / "hub")
    assert init.code == 0, init.err
    pub = keys / "site-a.pub"
    assert (
        cli("hub", "enroll", root / "hub", "site-a", pub, "--fingerprint", fingerprint(pub)).code
        == 0
    )
    assert cli("hub", "kit", root / "hub", "site-a", "--out", root / "kit").code == 0
    return keys


def _site_init(cli, root: Path, site: Path, key: Path, hub_fp: str, *extra: object):
    return cli(
        "site", "init", site, "--kit", root / "kit", "--site-id", "site-a", "--key", key,
        "--hub-fingerprint", hub_fp, *extra,
    )  # fmt: skip


def test_site_init_needs_the_hub_fingerprint_and_takes_it_without_prefix(
    cli, tmp_path: Path
) -> None:
    keys = _hub_and_kit(tmp_path, cli)
    missing = cli("site", "init", tmp_path / "s0", "--kit", tmp_path / "kit", "--site-id",
                  "site-a", "--key", keys / "site-a")  # fmt: skip
    assert missing.code == 2 and "hub-fingerprint" in missing.err
    bare = fingerprint(keys / "hub.pub").removeprefix("SHA256:")
    ok = _site_init(cli, tmp_path, tmp_path / "s1", keys / "site-a", bare)
    assert ok.code == 0, ok.err


def test_a_kit_from_another_hub_is_refused_without_showing_its_fingerprint(
    cli, tmp_path: Path
) -> None:
    keys = _hub_and_kit(tmp_path, cli)
    kit = tmp_path / "kit"
    # a consistent forgery: hub.pub and kit.toml both name the attacker's key
    forged = fingerprint(keys / "other.pub")
    shutil.copy(keys / "other.pub", kit / "hub.pub")
    toml = kit / "kit.toml"
    toml.write_text(toml.read_text().replace(fingerprint(keys / "hub.pub"), forged))
    before = tree_digest(tmp_path)
    result = _site_init(
        cli, tmp_path, tmp_path / "site", keys / "site-a", fingerprint(keys / "hub.pub")
    )
    assert result.code == 3 and "error[hub-fingerprint-mismatch]" in result.err
    assert forged not in result.err and forged.removeprefix("SHA256:") not in result.err
    assert tree_digest(tmp_path) == before and not (tmp_path / "site").exists()


def test_a_tampered_kit_is_refused(cli, tmp_path: Path) -> None:
    keys = _hub_and_kit(tmp_path, cli)
    shutil.copy(keys / "other.pub", tmp_path / "kit" / "hub.pub")  # kit.toml not updated
    result = _site_init(
        cli, tmp_path, tmp_path / "site", keys / "site-a", fingerprint(keys / "hub.pub")
    )
    assert result.code == 4 and "error[kit-tampered]" in result.err


def test_a_site_key_other_than_the_enrolled_one_is_refused_at_init_and_at_train(
    cli, tmp_path: Path
) -> None:
    keys = _hub_and_kit(tmp_path, cli)
    hub_fp = fingerprint(keys / "hub.pub")
    wrong = _site_init(cli, tmp_path, tmp_path / "bad", keys / "other", hub_fp)
    assert wrong.code == 3 and "error[site-key-mismatch]" in wrong.err
    assert fingerprint(keys / "other.pub") not in wrong.err
    assert fingerprint(keys / "site-a.pub") not in wrong.err
    data = digits_npz(tmp_path / "d.npz", np.arange(60))
    site = tmp_path / "site"
    assert _site_init(cli, tmp_path, site, keys / "site-a", hub_fp, "--data", data).code == 0
    package = site / "packages" / "fed-r0000.safetensors"
    other = cli("train", package, "--site", site, "--key", keys / "other", "--device", "cpu")
    assert other.code == 3 and "error[site-key-mismatch]" in other.err
    assert not list((site / "outbox").iterdir())


def test_hub_enroll_mismatch_never_prints_the_keys_fingerprint(cli, tmp_path: Path) -> None:
    keys = _hub_and_kit(tmp_path, cli)
    pub = keys / "other.pub"
    result = cli("hub", "enroll", tmp_path / "hub", "site-b", pub, "--fingerprint",
                 fingerprint(keys / "site-a.pub"))  # fmt: skip
    assert result.code == 3 and "error[fingerprint-mismatch]" in result.err
    assert fingerprint(pub) not in result.err
    bare = fingerprint(pub).removeprefix("SHA256:")
    assert cli("hub", "enroll", tmp_path / "hub", "site-b", pub, "--fingerprint", bare).code == 0


def test_kit_readme_names_no_admin_path_and_no_fingerprint_to_paste(cli, tmp_path: Path) -> None:
    keys = _hub_and_kit(tmp_path, cli)
    readme = (tmp_path / "kit" / "README.txt").read_text()
    assert str(tmp_path) not in readme
    assert fingerprint(keys / "hub.pub") not in readme
    assert "--hub-fingerprint" in readme and "by phone" in readme


def test_a_copied_site_workspace_trains(cli, tmp_path: Path) -> None:
    keys = _hub_and_kit(tmp_path, cli)
    site = tmp_path / "disk1" / "site"
    (site / "keys").mkdir(parents=True)
    for name in ("site-a", "site-a.pub"):
        shutil.copy(keys / name, site / "keys" / name)
    data = digits_npz(site / "d.npz", np.arange(60))
    hub_fp = fingerprint(keys / "hub.pub")
    assert (
        _site_init(cli, tmp_path, site, site / "keys" / "site-a", hub_fp, "--data", data).code == 0
    )
    assert str(tmp_path) not in (site / "site.toml").read_text()  # inside: stored relative
    moved = tmp_path / "disk2" / "site"
    shutil.copytree(site, moved)
    shutil.rmtree(tmp_path / "disk1")
    package = moved / "packages" / "fed-r0000.safetensors"
    result = cli("train", package, "--site", moved, "--device", "cpu")
    assert result.code == 0, result.err
    assert (moved / "outbox" / "fed-r0000-site-a.safetensors").exists()


@pytest.mark.parametrize("inside", [True, False])
def test_a_copied_hub_workspace_aggregates(cli, tmp_path: Path, inside: bool) -> None:
    keys = _hub_and_kit(tmp_path, cli)
    site = tmp_path / "site"
    data = digits_npz(tmp_path / "d.npz", np.arange(60))
    assert _site_init(cli, tmp_path, site, keys / "site-a", fingerprint(keys / "hub.pub"),
                      "--data", data).code == 0  # fmt: skip
    assert cli("train", site / "packages" / "fed-r0000.safetensors", "--site", site).code == 0
    moved = tmp_path / "elsewhere" / "hub"
    shutil.copytree(tmp_path / "hub", moved)
    for f in (site / "outbox").iterdir():
        shutil.copy(f, moved / "inbox" / f.name)
    key_args: list[object] = []
    if inside:  # the admin keeps the key in the workspace: hub.toml says so, relatively
        shutil.copy(keys / "hub", moved / "hub.key")
        (moved / "hub.toml").write_text(
            "\n".join(
                'key = "hub.key"' if line.startswith("key =") else line
                for line in (moved / "hub.toml").read_text().splitlines()
            )
        )
    else:  # the key moved too: say where it is now
        shutil.move(keys / "hub", tmp_path / "token-hub")
        key_args = ["--key", tmp_path / "token-hub"]
    shutil.rmtree(tmp_path / "hub")
    result = cli("aggregate", moved, *key_args)
    assert result.code == 0, result.err
    assert (moved / "packages" / "fed-r0001.safetensors").exists()


def test_a_damaged_checkpoint_is_an_error_not_a_silent_restart(cli, tmp_path: Path) -> None:
    from flsilo.format.artifact import scan_file

    keys = _hub_and_kit(tmp_path, cli)
    site = tmp_path / "site"
    data = digits_npz(tmp_path / "d.npz", np.arange(60))
    assert _site_init(cli, tmp_path, site, keys / "site-a", fingerprint(keys / "hub.pub"),
                      "--data", data).code == 0  # fmt: skip
    package = site / "packages" / "fed-r0000.safetensors"
    work = site / "work" / f"r0000-{scan_file(package).sha256[:12]}"
    work.mkdir(parents=True)
    (work / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    result = cli("train", package, "--site", site, "--device", "cpu")
    assert result.code == 1 and "error[checkpoint-damaged]" in result.err
    assert str(work) in result.err and not list((site / "outbox").iterdir())
    shutil.rmtree(work)  # what the hint says
    assert cli("train", package, "--site", site, "--device", "cpu").code == 0


def test_train_asks_for_the_passphrase_only_when_it_will_sign(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flsilo.signing.keys import generate_key, write_new_key

    keys = tmp_path / "keys"
    write_new_key(keys / "site-a", generate_key(), b"pw", "site-a")  # encrypted site key
    keys = _hub_and_kit(tmp_path, cli)
    site = tmp_path / "site"
    hub_fp = fingerprint(keys / "hub.pub")
    assert _site_init(cli, tmp_path, site, keys / "site-a", hub_fp).code == 0
    package = site / "packages" / "fed-r0000.safetensors"
    monkeypatch.delenv("FLSILO_PASSPHRASE", raising=False)
    # refused before any signature: no data, unusable data -> the data error, not a prompt
    nodata = cli("train", package, "--site", site)
    assert nodata.code == 2 and "error[key-passphrase]" not in nodata.err
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 5)), y=np.zeros(3))
    refused = cli("train", package, "--site", site, "--data", bad)
    assert refused.code == 4 and "error[key-passphrase]" not in refused.err
    # a run that will sign needs it
    data = digits_npz(tmp_path / "d.npz", np.arange(60))
    locked = cli("train", package, "--site", site, "--data", data)
    assert locked.code == 1 and "error[key-passphrase]" in locked.err
    monkeypatch.setenv("FLSILO_PASSPHRASE", "pw")
    assert cli("train", package, "--site", site, "--data", data).code == 0
    monkeypatch.delenv("FLSILO_PASSPHRASE")
    again = cli("train", package, "--site", site, "--data", data)  # already trained: no prompt
    assert again.code == 2 and "error[already-trained]" in again.err
