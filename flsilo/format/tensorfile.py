"""Strict safetensors structure: parse and check a header, write canonical files, check floats.

No torch here: this runs on the verify path. A header is checked completely before any
tensor byte is trusted: bounded length, UTF-8 JSON without duplicate keys, exact entry
schema, names non-empty without NUL, tensors contiguous from offset 0 with no gap or overlap,
sizes exact for dtype and shape, and the file length exact.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Headers beyond this are refused before anything is allocated for them."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects any flsilo JSON text may have (headers need 3,
manifests about 6); deeper texts are refused before the JSON parser recurses into them."""

MAX_TENSOR_RANK = 64
"""Most dimensions a tensor's shape may list."""

ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
NUMPY_DTYPE: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; see bf16_to_f32 / f32_to_bf16
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_EXPONENT_MASK: dict[str, tuple[np.dtype[Any], int]] = {
    "F64": (np.dtype("<u8"), 0x7FF0000000000000),
    "F32": (np.dtype("<u4"), 0x7F800000),
    "F16": (np.dtype("<u2"), 0x7C00),
    "BF16": (np.dtype("<u2"), 0x7F80),
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry: where its bytes are, relative to the start of the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def signature(self) -> tuple[str, str, tuple[int, ...], int, int]:
        return (self.name, self.dtype, self.shape, self.begin, self.end)


@dataclass(frozen=True)
class Header:
    """A fully checked safetensors header."""

    metadata: dict[str, str]
    tensors: tuple[TensorInfo, ...]
    header_len: int
    file_size: int

    @property
    def data_start(self) -> int:
        return 8 + self.header_len

    @property
    def data_size(self) -> int:
        return self.file_size - self.data_start

    def layout(self) -> tuple[tuple[str, str, tuple[int, ...], int, int], ...]:
        return tuple(t.signature() for t in self.tensors)


def _bad(source: str, why: str, code: Code = Code.BAD_STRUCTURE) -> MalformedInputError:
    return MalformedInputError(
        f"not a valid safetensors file: {why}",
        path=source,
        code=code,
        hint="the file is damaged, truncated or was not written by flsilo; get a fresh copy",
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # a key came twice: name the first one seen again
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {key!r}")
    return out


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonDepthError(ValueError):
    """A JSON text nests deeper than flsilo ever writes."""


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = np.zeros(256, dtype=np.int64)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def json_depth(text: str) -> int:
    """Deepest nesting of ``[`` and ``{`` outside strings, without recursion (linear time)."""
    if "\\" not in text and text.count('"') % 2 == 0:
        return _bracket_depth(_outside_strings(text))  # what the pattern finds, found faster
    return _bracket_depth(_JSON_STRING.sub("", text))


def _outside_strings(text: str) -> str:
    """``text`` less its strings, for a text without escapes whose every string is closed:
    the strings are then every other piece between quotes."""
    return "".join(text.split('"')[::2])


def _valid_json_depth(text: str) -> int:
    """:func:`json_depth` of a text that is valid JSON (any other may get another number).

    In valid JSON a backslash only ever starts an escape inside a string: dropping the
    escaped backslashes, then the escaped quotes, leaves quotes only where strings begin
    and end.
    """
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    return _bracket_depth(_outside_strings(text))


def _bracket_depth(bare: str) -> int:
    """Deepest nesting of the brackets of a text whose strings are already taken out."""
    if "[" not in bare and "{" not in bare:
        return 0
    brackets = bare.encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKETS)
    return int(np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)]).max(initial=0))


def _deeper_than(text: str, max_depth: int) -> JsonDepthError | None:
    depth = json_depth(text)
    return (
        JsonDepthError(f"nested {depth} levels deep (limit {max_depth})")
        if depth > max_depth
        else None
    )


def strict_json(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads that refuses duplicate keys, NaN/Infinity, deep nesting and lone surrogates.

    Every failure is a ValueError (never RecursionError), so callers turn it into their own
    malformed-input error naming the file. Too deep is said first, before any other fault:
    a text is parsed only when its depth is known to be within ``max_depth``, or when it
    would be if the text is valid JSON; a text that then fails to parse is measured
    exactly before its fault is said.
    """
    known = text.count("[") + text.count("{") <= max_depth  # no more levels than brackets
    if not known and _valid_json_depth(text) > max_depth:
        too_deep = _deeper_than(text, max_depth)
        if too_deep is not None:
            raise too_deep
        known = True
    try:
        return _parse(text)
    except ValueError as exc:
        fault = exc
    too_deep = None if known else _deeper_than(text, max_depth)
    raise too_deep or fault


def _parse(text: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard number {name}")

    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text holds an unpaired surrogate") from exc
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=no_constants)
    except RecursionError as exc:  # unreachable after json_depth; kept as a last guard
        raise JsonDepthError("nested too deeply") from exc
    if "\\u" in text and _has_surrogate(value):
        raise ValueError("a string holds an unpaired UTF-16 surrogate escape")
    return value


def _has_surrogate(value: Any) -> bool:
    """Whether any key or string holds a lone surrogate (safetensors' serde_json refuses it).

    A valid escaped pair decodes to one code point; only unpaired halves survive as
    surrogates. Recursion is bounded by the depth check done before parsing.
    """
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def read_header_length(prefix: bytes, file_size: int, source: str) -> int:
    if file_size < 8 or len(prefix) < 8:
        raise _bad(source, f"file is {file_size} bytes, too short for a header", Code.TRUNCATED)
    (header_len,) = struct.unpack("<Q", prefix[:8])
    if header_len > MAX_HEADER_BYTES:
        raise _bad(
            source,
            f"header claims {header_len} bytes (limit {MAX_HEADER_BYTES})",
            Code.HEADER_TOO_LARGE,
        )
    if header_len < 2 or 8 + header_len > file_size:
        raise _bad(
            source,
            f"header claims {header_len} bytes but the file has {file_size - 8} after the prefix",
            Code.TRUNCATED,
        )
    return int(header_len)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


def _tensor_entry(name: str, entry: Any, source: str) -> TensorInfo:
    """Check one tensor's header entry on its own: name, keys, dtype, shape, offsets, size."""
    if not name or "\x00" in name:
        raise _bad(source, f"tensor name {name!r} is empty or contains NUL", Code.BAD_NAME)
    if not isinstance(entry, dict) or entry.keys() != _ENTRY_KEYS:
        raise _bad(source, f"tensor {name!r} entry must have dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in ITEMSIZE:  # a list is no dtype either
        raise _bad(source, f"tensor {name!r} has unsupported dtype {dtype!r}", Code.BAD_DTYPE)
    if not isinstance(shape, list) or len(shape) > MAX_TENSOR_RANK or not all(map(_int, shape)):
        raise _bad(source, f"tensor {name!r} shape must be a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_int(o) for o in offsets)):
        raise _bad(source, f"tensor {name!r} data_offsets must be two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise _bad(source, f"tensor {name!r} ends before it begins", Code.BAD_OFFSETS)
    expected = math.prod(shape) * ITEMSIZE[dtype]
    if end - begin != expected:
        raise _bad(
            source,
            f"tensor {name!r} holds {end - begin} bytes but {dtype} x {shape} needs {expected}",
            Code.BAD_SIZE,
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def parse_header(header_bytes: bytes, file_size: int, source: str) -> Header:
    """Check a header completely. ``header_bytes`` excludes the 8-byte length prefix."""
    try:
        text = header_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(source, "header is not UTF-8") from exc
    if not text.startswith("{"):
        raise _bad(source, "header does not start with '{'")
    try:
        obj = strict_json(text)
    except JsonDepthError as exc:
        raise _bad(source, f"header is {exc}", Code.TOO_DEEP) from exc
    except ValueError as exc:
        raise _bad(source, f"header is not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise _bad(source, "header is not a JSON object")
    metadata_obj = obj.pop("__metadata__", {})
    if not isinstance(metadata_obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_obj.items()
    ):
        raise _bad(source, "__metadata__ must map strings to strings")
    tensors = [_tensor_entry(name, entry, source) for name, entry in obj.items()]
    tensors.sort(key=lambda t: (t.begin, t.end))
    position = 0
    for info in tensors:
        if info.begin != position:
            kind = "overlaps the previous tensor" if info.begin < position else "leaves a gap"
            raise _bad(
                source, f"tensor {info.name!r} {kind} (offset {info.begin})", Code.BAD_OFFSETS
            )
        position = info.end
    data_size = file_size - 8 - len(header_bytes)
    if position != data_size:
        what = "trailing bytes after" if data_size > position else "file is truncated before"
        raise _bad(
            source,
            f"{what} the last tensor ({data_size} data bytes, tensors cover {position})",
            Code.BAD_LENGTH,
        )
    return Header(
        metadata=dict(metadata_obj),
        tensors=tuple(tensors),
        header_len=len(header_bytes),
        file_size=file_size,
    )


def read_header(fh: BinaryIO, file_size: int, source: str) -> tuple[Header, bytes]:
    """Read and check the header from an open file; return it and the raw prefix+header bytes."""
    prefix = fh.read(8)
    header_len = read_header_length(prefix, file_size, source)
    header_bytes = fh.read(header_len)
    if len(header_bytes) != header_len:
        raise _bad(source, "file ended inside the header", Code.TRUNCATED)
    return parse_header(header_bytes, file_size, source), prefix + header_bytes


# ---------------------------------------------------------------------------------------
# Canonical writing


@dataclass(frozen=True)
class RawTensor:
    """Bytes of one tensor, little-endian, C order, with its safetensors dtype and shape."""

    dtype: str
    shape: tuple[int, ...]
    data: memoryview

    @classmethod
    def from_numpy(cls, array: np.ndarray, dtype: str | None = None) -> RawTensor:
        if dtype is None:
            dtype = next(k for k, v in NUMPY_DTYPE.items() if v == array.dtype and k != "BF16")
        contiguous = np.ascontiguousarray(array, dtype=NUMPY_DTYPE[dtype])
        return cls(dtype, tuple(int(d) for d in array.shape), contiguous.reshape(-1).data.cast("B"))


def canonical_order(tensors: Mapping[str, tuple[str, tuple[int, ...]]]) -> list[str]:
    """Largest item size first (keeps every tensor aligned), then by name."""
    return sorted(tensors, key=lambda name: (-ITEMSIZE[tensors[name][0]], name))


def build_header(
    specs: Mapping[str, tuple[str, tuple[int, ...]]], metadata: Mapping[str, str]
) -> tuple[bytes, list[TensorInfo]]:
    """The prefix+header bytes for tensors laid out in canonical order."""
    entries: dict[str, Any] = {"__metadata__": dict(metadata)}
    infos = []
    offset = 0
    for name in canonical_order(specs):
        dtype, shape = specs[name]
        size = math.prod(shape) * ITEMSIZE[dtype]
        entries[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        infos.append(TensorInfo(name, dtype, tuple(shape), offset, offset + size))
        offset += size
    header = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header, infos


# ---------------------------------------------------------------------------------------
# Float checks


def nonfinite_count(dtype: str, chunk: memoryview | bytes | np.ndarray) -> int:
    """Count NaN/Inf values in a chunk of raw little-endian bytes of ``dtype``."""
    if dtype not in FLOAT_DTYPES:
        return 0
    bits_dtype, mask = _EXPONENT_MASK[dtype]
    raw = np.frombuffer(chunk, dtype=bits_dtype)
    if dtype in ("F32", "F64"):
        values = raw.view(NUMPY_DTYPE[dtype])
        # Reductions propagate NaN and keep Inf: two fast passes without a temporary array.
        if values.size == 0 or (np.isfinite(values.min()) and np.isfinite(values.max())):
            return 0
        return int(np.count_nonzero(~np.isfinite(values)))
    return int(np.count_nonzero((raw & bits_dtype.type(mask)) == mask))


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 bits, nearest-even (as torch does)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def to_float64(dtype: str, raw: np.ndarray) -> np.ndarray:
    """Widen a raw slice (as stored) to float64 for exact accumulation."""
    if dtype == "BF16":
        return bf16_to_f32(raw).astype(np.float64)
    return raw.astype(np.float64)


def from_float64(dtype: str, values: np.ndarray) -> np.ndarray:
    """Narrow float64 results to the stored dtype's raw representation."""
    if dtype == "BF16":
        return f32_to_bf16(values.astype(np.float32))
    return values.astype(NUMPY_DTYPE[dtype])
