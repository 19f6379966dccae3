"""SSH wire encoding (RFC 4251 strings, uint32s and mpints) shared by keys and signatures."""

from __future__ import annotations

import struct


class WireFormatError(ValueError):
    """The bytes do not follow the SSH wire encoding."""


def pack_uint32(value: int) -> bytes:
    return struct.pack(">I", value)


def pack_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def pack_mpint(value: int) -> bytes:
    """A non-negative integer as an RFC 4251 mpint (minimal two's complement, big-endian)."""
    if value < 0:
        raise ValueError("negative mpint")
    if value == 0:
        return pack_string(b"")
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return pack_string(raw)


class WireReader:
    """Reads SSH wire fields from a byte string, refusing truncation and trailing bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def raw(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise WireFormatError("truncated field")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.raw(4))[0]
        return value

    def string(self) -> bytes:
        return self.raw(self.uint32())

    def mpint(self) -> int:
        """A non-negative mpint in its one canonical encoding (anything else is refused)."""
        raw = self.string()
        value = int.from_bytes(raw, "big")
        if raw and raw[0] & 0x80:
            raise WireFormatError("negative mpint")
        if pack_mpint(value) != pack_string(raw):
            raise WireFormatError("mpint is not minimally encoded")
        return value

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError as exc:
            raise WireFormatError("non-ASCII text field") from exc

    def done(self) -> None:
        if self._pos != len(self._data):
            raise WireFormatError(f"{len(self._data) - self._pos} unexpected trailing bytes")
