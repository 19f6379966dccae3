"""Unlocking a private key: three tries at a prompt, hints that name the source used, mix-ups."""

from __future__ import annotations

import getpass
import io
import sys
from pathlib import Path

import pytest

from flsilo.cli.common import PassphraseAsker
from flsilo.runtime.errors import KeyFileError
from flsilo.signing.keys import generate_key, load_private_key, write_new_key


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def locked_key(tmp_path: Path) -> Path:
    path = tmp_path / "hub"
    write_new_key(path, generate_key("ed25519"), b"right", "hub")
    return path


def _typed(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Answer the prompt with ``answers`` in turn; returns the prompts shown."""
    shown: list[str] = []
    queue = list(answers)

    def fake(prompt: str) -> str:
        shown.append(prompt)
        return queue.pop(0)

    monkeypatch.delenv("FLSILO_PASSPHRASE", raising=False)
    monkeypatch.setattr(sys, "stdin", _Tty())
    monkeypatch.setattr(getpass, "getpass", fake)
    return shown


def test_a_wrong_passphrase_at_the_prompt_is_asked_again(
    locked_key: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _typed(monkeypatch, "wrong", "still wrong", "right")
    load_private_key(locked_key, PassphraseAsker(None))
    assert len(shown) == 3
    assert capsys.readouterr().err.count("Wrong passphrase, try again.") == 2


def test_three_wrong_passphrases_end_with_a_hint_about_the_prompt(
    locked_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = _typed(monkeypatch, "a", "b", "c", "right")
    with pytest.raises(KeyFileError) as caught:
        load_private_key(locked_key, PassphraseAsker(None))
    assert len(shown) == 3
    assert "3 wrong passphrases typed" in (caught.value.hint or "")
    assert "FLSILO_PASSPHRASE" not in (caught.value.hint or "")


def test_a_wrong_passphrase_from_the_environment_is_not_retried(
    locked_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = _typed(monkeypatch, "right")
    monkeypatch.setenv("FLSILO_PASSPHRASE", "wrong")
    with pytest.raises(KeyFileError) as caught:
        load_private_key(locked_key, PassphraseAsker(None))
    assert shown == []
    assert caught.value.hint == "check the passphrase in FLSILO_PASSPHRASE"


def test_a_wrong_passphrase_file_names_the_file_only(locked_key: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("wrong\n")
    with pytest.raises(KeyFileError) as caught:
        load_private_key(locked_key, PassphraseAsker(secret))
    hint = caught.value.hint or ""
    assert str(secret) in hint and "FLSILO_PASSPHRASE" not in hint


def test_a_public_key_where_the_private_key_belongs(locked_key: Path) -> None:
    with pytest.raises(KeyFileError) as caught:
        load_private_key(locked_key.with_name("hub.pub"), PassphraseAsker(None))
    assert "public key" in caught.value.message
    assert "hub" in (caught.value.hint or "")


def test_a_directory_where_the_private_key_belongs(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as caught:
        load_private_key(tmp_path, PassphraseAsker(None))
    assert "directory" in caught.value.message


def test_only_the_pub_half_present(tmp_path: Path) -> None:
    key = tmp_path / "site-a"
    write_new_key(key, generate_key("ed25519"), None, "site-a")
    key.unlink()
    with pytest.raises(KeyFileError) as caught:
        load_private_key(key, PassphraseAsker(None))
    assert "only site-a.pub is here" in (caught.value.hint or "")


def test_an_interrupt_at_a_prompt_starts_its_message_on_a_new_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flsilo.cli.app import run

    def interrupt(_prompt: str) -> str:
        raise KeyboardInterrupt

    monkeypatch.delenv("FLSILO_PASSPHRASE", raising=False)
    monkeypatch.setattr(sys, "stdin", _Tty())
    monkeypatch.setattr(getpass, "getpass", interrupt)
    code = run(["keys", "new", str(tmp_path / "k")])
    err = capsys.readouterr().err
    assert code == 130
    assert err.startswith("\nflsilo: error[")
    assert not (tmp_path / "k").exists()
