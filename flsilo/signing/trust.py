"""OpenSSH ``allowed_signers`` trust: parse, format, and decide whether a key may sign.

Follows ssh-keygen(1) ALLOWED SIGNERS: ``principals [options] keytype base64 [comment]``,
principals a comma-separated pattern list (``*``, ``?``, ``!negation``), options
``namespaces="..."``, ``valid-after=...``, ``valid-before=...`` and ``cert-authority``
(certificate authorities are not used by flsilo and such lines never match a plain key).
Decisions are pure: callers give the principal, namespace, key and time.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flsilo.fs.untrusted import MAX_SMALL_FILE_BYTES, read_bounded
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import KeyFileError, MalformedInputError, VerificationError
from flsilo.signing.keys import PublicKey, parse_public_line

HUB_PRINCIPAL = "hub"
"""The principal a hub's package-signing key carries in allowed_signers."""


@dataclass(frozen=True)
class SignerEntry:
    """One line of an allowed_signers file."""

    principals: str
    key: PublicKey
    namespaces: str | None = None
    valid_after: int | None = None
    valid_before: int | None = None
    cert_authority: bool = False
    line_no: int = 0

    def matches_principal(self, principal: str) -> bool:
        return match_pattern_list(principal, self.principals)

    def allows_namespace(self, namespace: str) -> bool:
        return self.namespaces is None or match_pattern_list(namespace, self.namespaces)

    def valid_at(self, when: int) -> bool:
        if self.valid_after is not None and when < self.valid_after:
            return False
        return self.valid_before is None or when <= self.valid_before

    def format(self) -> str:
        options = []
        if self.cert_authority:
            options.append("cert-authority")
        if self.namespaces is not None:
            options.append(f'namespaces="{self.namespaces}"')
        if self.valid_after is not None:
            options.append(f'valid-after="{format_time(self.valid_after)}"')
        if self.valid_before is not None:
            options.append(f'valid-before="{format_time(self.valid_before)}"')
        fields = [self.principals]
        if options:
            fields.append(",".join(options))
        fields.append(self.key.openssh_line())
        return " ".join(fields)


def match_pattern_list(value: str, patterns: str) -> bool:
    """OpenSSH match_pattern_list: any positive match and no negated match."""
    matched = False
    for raw in patterns.split(","):
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        if fnmatch.fnmatchcase(value, pattern):
            if negated:
                return False
            matched = True
    return matched


def parse_time(text: str, *, source: str, line_no: int) -> int:
    """OpenSSH absolute time: YYYYMMDD[HHMM[SS]][Z]; without Z it is local time."""
    utc = text.endswith("Z")
    digits = text[:-1] if utc else text
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    fmt = formats.get(len(digits))
    try:
        if fmt is None or not digits.isdigit():
            raise ValueError(text)
        parsed = datetime.strptime(digits, fmt)
    except ValueError as exc:
        raise MalformedInputError(
            f"line {line_no}: bad time {text!r}",
            path=source,
            code=Code.SIGNERS_MALFORMED,
            hint="times are YYYYMMDD[HHMM[SS]][Z], as in ssh-keygen(1)",
        ) from exc
    if utc:
        return int(parsed.replace(tzinfo=UTC).timestamp())
    return int(time.mktime(parsed.timetuple()))


def format_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d%H%M%SZ")


_FIELD = re.compile(r'(?:[^ \t"]+|"[^"]*")+')


def _split_fields(line: str) -> list[str]:
    """Split on whitespace, keeping double-quoted runs together."""
    if line.count('"') % 2 == 0:  # every quote closed: one pattern finds the same fields
        return _FIELD.findall(line)
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch in " \t" and not quoted:
            if current:
                fields.append("".join(current))
                current = []
        else:
            current.append(ch)
    if quoted:
        raise ValueError("unterminated quote")
    if current:
        fields.append("".join(current))
    return fields


def _split_options(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def parse_allowed_signers(text: str, *, source: str = "allowed_signers") -> list[SignerEntry]:
    entries: list[SignerEntry] = []
    for line_no, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            fields = _split_fields(line)
        except ValueError as exc:
            raise MalformedInputError(
                f"line {line_no}: {exc}", path=source, code=Code.SIGNERS_MALFORMED
            ) from exc
        if len(fields) < 3:
            raise MalformedInputError(
                f"line {line_no}: expected 'principals [options] keytype key'",
                path=source,
                code=Code.SIGNERS_MALFORMED,
                hint="see ALLOWED SIGNERS in ssh-keygen(1)",
            )
        principals = fields[0].strip('"')
        options: dict[str, str | None] = {}
        rest = fields[1:]
        if not rest[0].startswith("ssh-") and not rest[0].startswith("ecdsa-"):
            for opt in _split_options(rest[0]):
                name, _, value = opt.partition("=")
                options[name.lower()] = value.strip('"') if value else None
            rest = rest[1:]
        unknown = set(options) - {"namespaces", "valid-after", "valid-before", "cert-authority"}
        if unknown:
            raise MalformedInputError(
                f"line {line_no}: unknown option {sorted(unknown)[0]!r}",
                path=source,
                code=Code.SIGNERS_MALFORMED,
                hint="flsilo understands namespaces=, valid-after=, valid-before=",
            )
        try:
            key = parse_public_line(" ".join(rest), source=f"{source} line {line_no}")
        except KeyFileError as exc:
            if exc.code == Code.KEY_TYPE:
                continue  # other key types may sit in a shared file; they never match ours
            raise MalformedInputError(
                exc.message, path=exc.path, code=Code.SIGNERS_MALFORMED
            ) from exc
        after = options.get("valid-after")
        before = options.get("valid-before")
        entries.append(
            SignerEntry(
                principals=principals,
                key=key,
                namespaces=options.get("namespaces"),
                valid_after=parse_time(after, source=source, line_no=line_no) if after else None,
                valid_before=parse_time(before, source=source, line_no=line_no) if before else None,
                cert_authority="cert-authority" in options,
                line_no=line_no,
            )
        )
    return entries


class AllowedSigners:
    """A parsed allowed_signers file that answers: may this key sign as this principal?"""

    def __init__(self, entries: list[SignerEntry], source: str = "allowed_signers") -> None:
        self.entries = entries
        self.source = source

    @classmethod
    def load(cls, path: Path) -> AllowedSigners:
        try:
            text = read_bounded(path, MAX_SMALL_FILE_BYTES, follow=True).decode("utf-8")
        except MalformedInputError as exc:
            if exc.code != Code.MISSING:
                raise
            raise MalformedInputError(
                "allowed_signers file not found",
                path=path,
                code=Code.SIGNERS_MISSING,
                hint="give the hub's allowed_signers file (HUB_DIR/allowed_signers)",
            ) from exc
        except UnicodeDecodeError as exc:
            raise MalformedInputError(f"cannot read allowed_signers ({exc})", path=path) from exc
        return cls(parse_allowed_signers(text, source=str(path)), source=str(path))

    def check(
        self, principal: str, namespace: str, key: PublicKey, when: int, *, source: str
    ) -> SignerEntry:
        """Return the entry that allows ``key`` to sign as ``principal``, or raise."""
        same_key = [e for e in self.entries if e.key.blob == key.blob and not e.cert_authority]
        if not same_key:
            raise VerificationError(
                f"signed by an unknown key {key.fingerprint}",
                path=source,
                code=Code.UNKNOWN_SIGNER,
                hint=f"this key is not in {self.source}; a site must be enrolled before its "
                "bundles are accepted",
            )
        for_principal = [e for e in same_key if e.matches_principal(principal)]
        if not for_principal:
            owners = ", ".join(sorted({e.principals for e in same_key}))
            raise VerificationError(
                f"signed by {owners}'s key, but the file claims to come from {principal!r}",
                path=source,
                code=Code.PRINCIPAL_MISMATCH,
                hint="a site may only sign its own bundles; treat this file as forged",
            )
        in_namespace = [e for e in for_principal if e.allows_namespace(namespace)]
        if not in_namespace:
            raise VerificationError(
                f"key of {principal!r} is not allowed to sign in namespace {namespace!r}",
                path=source,
                code=Code.NAMESPACE_NOT_ALLOWED,
                hint=f"see the namespaces= option in {self.source}",
            )
        for entry in in_namespace:
            if entry.valid_at(when):
                return entry
        entry = in_namespace[0]
        if entry.valid_before is not None and when > entry.valid_before:
            raise VerificationError(
                f"key of {principal!r} was revoked or expired at {format_time(entry.valid_before)}",
                path=source,
                code=Code.KEY_REVOKED,
                hint="a file signed before the key was revoked or replaced verifies with --at "
                "and its acceptance time from the event log ('flsilo audit' judges it by the "
                "log's order); anything signed later is refused",
            )
        raise VerificationError(
            f"key of {principal!r} is not valid yet",
            path=source,
            code=Code.KEY_NOT_YET_VALID,
            hint=f"see valid-after in {self.source}",
        )


class SingleKey:
    """Trust exactly one public key, for any principal (``flsilo verify --key``)."""

    def __init__(self, key: PublicKey, source: str) -> None:
        self.key = key
        self.source = source

    # TrustPolicy's signature; one given key has no namespace or validity of its own
    def check(
        self,
        principal: str,
        namespace: str,  # noqa: ARG002
        key: PublicKey,
        when: int,  # noqa: ARG002
        *,
        source: str,
    ) -> SignerEntry:
        if key.blob != self.key.blob:
            raise VerificationError(
                f"signed by {key.fingerprint}, not by the given key {self.key.fingerprint}",
                path=source,
                code=Code.UNKNOWN_SIGNER,
                hint=f"check that {self.source} is the signer's public key",
            )
        return SignerEntry(principals=principal, key=self.key)


TrustPolicy = AllowedSigners | SingleKey
