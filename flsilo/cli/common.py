"""Shared CLI plumbing: output consoles, JSON reports, passphrases, error lines, exit codes."""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.segment import Segment

from flsilo.fs.safetext import shown
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import ExitCode, FlsiloError, KeyFileError, UsageError
from flsilo.signing.keys import PassphraseSource

REPORT_SCHEMA = "flsilo.report/1"
FINAL_UNKNOWN = (
    "final for use only once any evaluation reports the hub requires verify, which no file"
    " shows (flsilo hub status HUB)"
)
"""What ``inspect`` and ``verify`` say of a final package: ``hub init --require-evaluations``
is in the hub's log, not in the package, so neither can call it final for use."""


@dataclass
class CliState:
    """Per-invocation switches the error handler must know about."""

    json: bool = False
    verbose: bool = False
    threads: int | None = None
    """--threads as given (None: the default chosen by flsilo.runtime.cpu)."""
    prompt_open: bool = False
    """An interactive prompt is waiting on its line: an interrupt ends that line first."""


STATE = CliState()


class SafeConsole(Console):
    """A rich console that escapes control and bidi characters in everything it prints
    (:func:`flsilo.fs.safetext.shown`): a file name in a table cell cannot drive the terminal.

    The escape is applied to each rendered segment's text, before rich adds its own styles.
    """

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            seg if seg.control else Segment(shown(seg.text, newlines=True), seg.style)
            for seg in buffer
        )


def stdout() -> Console:
    """Data for people. A terminal's own width; a pipe or file gets $COLUMNS, else 80, so a
    report pasted into a ticket or a mail reads the same as on an 80-column screen."""
    return SafeConsole(highlight=False)


def stderr() -> Console:
    return SafeConsole(stderr=True, highlight=False)


def print_data(text: str) -> None:
    """One line of data on stdout (a path, a fingerprint) as is: never wrapped to the
    terminal and never read as markup, so ``$(flsilo ...)`` in a script gets it whole.
    Control characters are escaped (:func:`flsilo.fs.safetext.shown`)."""
    sys.stdout.write(shown(text) + "\n")
    sys.stdout.flush()


def plural(count: int, noun: str) -> str:
    """'1 round', '2 rounds': a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def short_digest(hexdigest: str, n: int = 12) -> str:
    """The first n hex digits of a sha256, marked as shortened (the whole one is in --json)."""
    return hexdigest[:n] + "…" if len(hexdigest) > n else hexdigest


def short_fingerprint(fingerprint: str, n: int = 12) -> str:
    """SHA256:vtg294suRYp5… : enough to tell keys apart in a table (whole in --json)."""
    head, _, body = fingerprint.partition(":")
    return f"{head}:{short_digest(body, n)}" if body else fingerprint


def set_json(enabled: bool) -> None:
    STATE.json = enabled


def emit_json(command: str, ok: bool, payload: dict[str, Any]) -> None:
    """The one --json envelope (docs/reference/json-output.md): schema, command, ok, version."""
    from flsilo import __version__

    doc = {
        "schema": REPORT_SCHEMA,
        "command": command,
        "ok": ok,
        "flsilo_version": __version__,
        **payload,
    }
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def error_line(err: FlsiloError) -> str:
    """The one line an error prints: a name or message from outside cannot break it into
    several lines or drive the terminal (control characters escaped)."""
    return shown(f"flsilo: error[{err.code}]: {err.one_line()}")


def print_error(err: FlsiloError) -> None:
    """Exactly one line on stderr (and, with --json, a JSON error document on stdout)."""
    if STATE.json:
        emit_json("error", False, {"error": err.to_dict()})
    sys.stderr.write(error_line(err) + "\n")
    sys.stderr.flush()


def print_notes(notes: list[str]) -> None:
    """What a command did besides its task (flsilo.runtime.notices), one line each on stderr."""
    for note in notes:
        sys.stderr.write(shown(f"flsilo: note: {note}") + "\n")
    sys.stderr.flush()


def info(message: str) -> None:
    """A progress or guidance line for people: stderr, never mixed into data on stdout."""
    if not STATE.json:
        sys.stderr.write(fold(shown(message, newlines=True), stderr().width))
        sys.stderr.flush()


def say(message: str) -> None:
    """A result sentence for people on stdout, folded as :func:`fold` does."""
    sys.stdout.write(fold(shown(message, newlines=True), stdout().width))
    sys.stdout.flush()


def fold(message: str, width: int) -> str:
    """Prose wrapped at spaces to ``width`` (a path moves to the next line whole, never
    split); a suggested command (after ': flsilo ', or a line that is one) goes on a line
    of its own and is never wrapped, so it pastes back whole."""
    width = max(width, 20)
    if message.lstrip().startswith("flsilo ") or len(message) <= width:
        lines = [message]
    else:
        prose, sep, command = message.partition(": flsilo ")
        lines = textwrap.wrap(
            prose + (":" if sep else ""),
            width,
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines += [f"  flsilo {command}"] if sep else []
    return "".join(line + "\n" for line in lines)


class PassphraseAsker:
    """--passphrase-file, then FLSILO_PASSPHRASE, then an interactive prompt (CLI.md order).

    Called only when an encrypted key is unlocked, so nothing is asked unless a signature
    will be made. It remembers which source it read last, so a wrong passphrase is asked
    again only at a prompt (``may_ask_again``) and the hint names only that source.
    """

    def __init__(self, passphrase_file: Path | None) -> None:
        self.passphrase_file = passphrase_file
        self.source = ""
        self.asked = 0

    @property
    def may_ask_again(self) -> bool:
        return self.source == "prompt"

    @property
    def wrong_hint(self) -> str:
        if self.source == "file":
            return f"check the passphrase in {self.passphrase_file} (--passphrase-file)"
        if self.source == "env":
            return "check the passphrase in FLSILO_PASSPHRASE"
        return f"{self.asked} wrong passphrases typed; ask whoever made the key for it"

    def __call__(self, key_path: Path) -> bytes:
        if self.passphrase_file is not None:
            self.source = "file"
            return read_passphrase_file(self.passphrase_file)
        env = os.environ.get("FLSILO_PASSPHRASE")
        if env:
            self.source = "env"
            return env.encode("utf-8")
        if sys.stdin.isatty():
            self.source = "prompt"
            if self.asked:
                sys.stderr.write("Wrong passphrase, try again.\n")
            self.asked += 1
            return prompt_secret(f"Passphrase for {key_path}: ").encode("utf-8")
        raise KeyFileError(
            "key is encrypted and no passphrase was given",
            path=key_path,
            code=Code.KEY_PASSPHRASE,
            hint="set FLSILO_PASSPHRASE or pass --passphrase-file FILE",
        )


def passphrase_source(passphrase_file: Path | None) -> PassphraseSource:
    """The passphrase source of a command's ``--passphrase-file`` option (see PassphraseAsker)."""
    return PassphraseAsker(passphrase_file)


def prompt_secret(prompt: str) -> str:
    """getpass, remembering that a prompt is open so an interrupt first ends its line."""
    STATE.prompt_open = True
    answer = getpass.getpass(prompt)  # an interrupt leaves the flag set for its handler
    STATE.prompt_open = False
    return answer


def read_passphrase_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read passphrase file ({exc.strerror})",
            path=path,
            code=Code.PASSPHRASE_FILE,
            hint="check the path given to --passphrase-file (a file holding only the passphrase)",
        ) from exc
    return data.rstrip(b"\r\n")


def new_passphrase(no_passphrase: bool, passphrase_file: Path | None) -> bytes | None:
    """The passphrase for a key being created; None only with --no-passphrase."""
    if no_passphrase:
        return None
    if passphrase_file is not None:
        data = read_passphrase_file(passphrase_file)
        if not data:
            raise UsageError("passphrase file is empty", path=passphrase_file)
        return data
    env = os.environ.get("FLSILO_PASSPHRASE")
    if env:
        return env.encode("utf-8")
    if sys.stdin.isatty():
        first = prompt_secret("New key passphrase: ")
        if first != prompt_secret("Repeat passphrase: "):
            raise UsageError("passphrases do not match", hint="run the command again")
        if first:
            return first.encode("utf-8")
    raise UsageError(
        "a new key needs a passphrase",
        code=Code.PASSPHRASE_REQUIRED,
        hint="set FLSILO_PASSPHRASE, pass --passphrase-file FILE, or --no-passphrase for a "
        "throw-away key",
    )


def parse_when(text: str | None) -> int | None:
    """--at: 'now', YYYYMMDD[HHMM[SS]][Z] as in allowed_signers, or the ISO 8601 time the
    event log and manifests show (2026-11-22T14:03:00Z; a date alone is its midnight)."""
    if text is None or text == "now":
        return None
    from flsilo.signing.trust import parse_time

    compact = re.sub(r"[-:]", "", text.strip()).replace("T", "").replace(" ", "")
    try:
        return parse_time(compact, source="--at", line_no=0)
    except FlsiloError as exc:
        raise UsageError(
            f"--at {text!r} is not a time",
            hint="use a time from the event log, e.g. 2026-11-22T14:03:00Z, or YYYYMMDD[HHMM[SS]][Z]",
        ) from exc


def exit_code_for(errors: list[FlsiloError]) -> int:
    if not errors:
        return int(ExitCode.OK)
    codes = {int(e.exit_code) for e in errors}
    if int(ExitCode.VERIFICATION_FAILED) in codes:
        return int(ExitCode.VERIFICATION_FAILED)
    return max(codes)
