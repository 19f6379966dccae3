"""The site's index of its data: one small entry per sample, kept in the site workspace.

Building the index walks the data once through the format's adapter: every file's size,
mtime and sha256, each sample's target and frame, and every bad record with its reason.
Each new or changed record is decoded once, so an unreadable file is a bad record before
training starts. The index is kept as ``SITE_DIR/index/KEY.json`` (KEY: the data path, the
format and the federation's classes and input shape), written atomically; the next run
walks the data again and re-hashes (and re-decodes) only files whose size or mtime changed.

In memory the index is a few flat arrays (about 100 bytes a record plus its path), so
training's memory does not grow with the number of records. ``digest`` is the sha256 of
the records in order (source, frame, target and content digest: not sizes or mtimes, so a
copy of the same data has the same digest); the site record's data digest and the decoded
cache are keyed by it.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flsilo.format.manifest import to_jsonable
from flsilo.fs.atomic import atomic_writer
from flsilo.plans.plan import TaskSpec
from site_kit.data import BadRecord, DataContext, adapter
from site_kit.data.records import FileIdentity, Record

INDEX_VERSION = 1
INDEX_DIR = "index"
HASH_CHUNK = 1 << 20


class Identifier:
    """``identify(file)`` for adapters: stat the file, hash it unless the index knows it.

    ``known`` maps a source to the (size, mtime_ns, digest) the last index recorded; a file
    whose size and mtime match keeps its digest and is not re-hashed. ``hash_files`` False
    (a one-off read, such as ``flsilo evaluate``) leaves digests empty.
    """

    def __init__(
        self, root: Path, known: dict[str, tuple[int, int, str]], *, hash_files: bool = True
    ) -> None:
        self.root = root
        self.known = known
        self.hash_files = hash_files
        self.fresh: set[str] = set()

    def __call__(self, file: Path) -> FileIdentity:
        source = file.relative_to(self.root).as_posix()
        st = file.stat()
        old = self.known.get(source)
        if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            return FileIdentity(source, st.st_size, st.st_mtime_ns, old[2])
        self.fresh.add(source)
        digest = file_sha256(file) if self.hash_files else ""
        return FileIdentity(source, st.st_size, st.st_mtime_ns, digest)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Column:
    """Texts stored end to end in one byte buffer, with offsets (no per-record objects)."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.offsets = array("q", [0])

    def append(self, text: str) -> None:
        self.blob += text.encode("utf-8")
        self.offsets.append(len(self.blob))

    def frozen(self) -> tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(bytes(self.blob), dtype=np.uint8), np.asarray(
            self.offsets, dtype=np.int64
        )


def _text(blob: np.ndarray, offsets: np.ndarray, i: int) -> str:
    return blob[int(offsets[i]) : int(offsets[i + 1])].tobytes().decode("utf-8")


class DataIndex:
    """The usable records of one data source, in the adapter's order, as flat arrays."""

    def __init__(self, fmt: str, records: Iterable[Record], bad: list[BadRecord]) -> None:
        self.format = fmt
        self.bad = bad
        sources, frames, labels = _Column(), _Column(), _Column()
        targets, sizes, mtimes = array("q"), array("q"), array("q")
        digests = bytearray()
        hasher = hashlib.sha256(b"flsilo index v1\n")
        for r in records:
            sources.append(r.source)
            frames.append(r.frame)
            labels.append(r.label)
            targets.append(r.target)
            sizes.append(r.size)
            mtimes.append(r.mtime_ns)
            digests += bytes.fromhex(r.digest) if r.digest else bytes(32)
            hasher.update(_line(r))
        self._sources, self._source_at = sources.frozen()
        self._labels, self._label_at = labels.frozen()
        self._frames, self._frame_at = frames.frozen()
        self.targets = np.asarray(targets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.mtimes = np.asarray(mtimes, dtype=np.int64)
        self._digests = np.frombuffer(bytes(digests), dtype=np.uint8).reshape(-1, 32)
        self.hashed = bool(self._digests.any())
        self.digest = hasher.hexdigest()
        self.stale = False  # set by build_index: the stored copy differs (see save_index)

    @property
    def state(self) -> str:
        return _state_digest(self)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def source(self, i: int) -> str:
        return _text(self._sources, self._source_at, i)

    def frame(self, i: int) -> str:
        return _text(self._frames, self._frame_at, i)

    def label(self, i: int) -> str:
        return _text(self._labels, self._label_at, i)

    def record(self, i: int) -> Record:
        digest = self._digests[i].tobytes().hex() if self.hashed else ""
        return Record(
            self.source(i),
            int(self.targets[i]),
            int(self.sizes[i]),
            int(self.mtimes[i]),
            digest,
            self.frame(i),
            self.label(i),
        )

    def records(self) -> Iterator[Record]:
        return (self.record(i) for i in range(len(self)))

    def subset_digest(self, positions: np.ndarray) -> str:
        """sha256 of the records at ``positions`` in that order (a split's own digest)."""
        hasher = hashlib.sha256(b"flsilo index v1\n")
        for i in positions.tolist():
            hasher.update(_line(self.record(i)))
        return hasher.hexdigest()


def _line(r: Record) -> bytes:
    """A record's line in the digests; a task's label text only where there is one."""
    label = f"\0{r.label}" if r.label else ""
    return f"{r.source}\0{r.frame}\0{r.target}\0{r.digest}{label}\n".encode()


def index_key(path: Path, fmt: str, ctx: DataContext) -> str:
    """The index file's name for this data source read against this federation."""
    ident = json.dumps(
        [
            os.path.abspath(path),
            fmt,
            list(ctx.classes),
            list(ctx.input_shape),
            ctx.spec.label_column,
            list(ctx.spec.feature_columns),
            *([] if ctx.task == TaskSpec() else [to_jsonable(ctx.task)]),
        ]
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def build_index(
    path: Path,
    fmt: str,
    ctx: DataContext,
    *,
    store: Path | None = None,
    values: list[np.ndarray] | None = None,
) -> DataIndex:
    """Index ``path`` against ``store``'s copy when given (hashing files only then).

    The index is not written here: ``save_index`` keeps it once the caller has accepted
    the data, so a command refused for bad data leaves the workspace as it was. A table
    format's feature rows are appended to ``values`` (tables stay in memory).
    """
    module = adapter(fmt)
    previous = _read(store, fmt) if store is not None else None
    known = previous["known"] if previous else {}
    identify = Identifier(ctx.root, known, hash_files=store is not None)
    old_bad: dict[tuple[str, int, int], str] = previous["bad"] if previous else {}
    check = getattr(module, "CHECK_ON_INDEX", True)
    bad: list[BadRecord] = []

    def usable() -> Iterator[Record]:
        if module.KIND == "table":
            for item in module.rows(path, ctx, identify):
                if isinstance(item, BadRecord):
                    bad.append(item)
                    continue
                record, row = item
                if values is not None:
                    values.append(row)
                yield record
            return
        for item in module.index(path, ctx, identify):
            if isinstance(item, BadRecord):
                bad.append(item)
                continue
            verdict = _verdict(module, item, ctx, identify, old_bad, check=check)
            if verdict is None:
                yield item
            else:
                bad.append(verdict)

    index = DataIndex(fmt, usable(), bad)
    index.stale = store is not None and (previous is None or previous["digest"] != index.state)
    return index


def _verdict(
    module: Any,
    record: Record,
    ctx: DataContext,
    identify: Identifier,
    old_bad: dict[tuple[str, int, int], str],
    *,
    check: bool,
) -> BadRecord | None:
    """The bad record a record's bytes make, from the last index unless its file changed."""
    where = str(ctx.root / record.source) + (f" @ {record.frame}" if record.frame else "")
    if record.source not in identify.fresh:
        why = old_bad.get((record.source + "\0" + record.frame, record.size, record.mtime_ns))
        if why is None:
            return None
    elif not check:
        return None
    else:
        try:
            module.decode(record, ctx)
            return None
        except BadRecord as exc:
            why = exc.why
    return BadRecord(
        where, why, source=record.source + "\0" + record.frame, size=record.size,
        mtime_ns=record.mtime_ns,
    )  # fmt: skip


def _state_digest(index: DataIndex) -> str:
    """sha256 of everything the stored index holds, to skip rewriting an unchanged one."""
    bad = [[b.where, b.why, b.source, b.size, b.mtime_ns] for b in index.bad]
    state = json.dumps(
        [index.digest, index.sizes.tolist(), index.mtimes.tolist(), bad], separators=(",", ":")
    )
    return hashlib.sha256(state.encode()).hexdigest()


def save_index(store: Path, index: DataIndex) -> None:
    """Keep ``index`` as ``store`` (atomically), unless the stored copy already says the same."""
    if index.stale:
        _write(store, index)
        index.stale = False


def _write(store: Path, index: DataIndex) -> None:
    """One JSON object, a record per line, written as it goes (no copy of the whole index)."""
    head = {
        "flsilo_index": INDEX_VERSION,
        "format": index.format,
        "records_sha256": index.digest,
        "state_sha256": index.state,
        "bad": [[b.where, b.why, b.source, b.size, b.mtime_ns] for b in index.bad],
    }
    store.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(store) as fh:
        fh.write(json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"records":[')
        for i, r in enumerate(index.records()):
            row = [r.source, r.target, r.size, r.mtime_ns, r.digest, r.frame]
            if r.label:
                row.append(r.label)
            fh.write((",\n" if i else "\n").encode() + json.dumps(row).encode("utf-8"))
        fh.write(b"\n]}\n")


def _read(store: Path, fmt: str) -> dict[str, Any] | None:
    """What the stored index knows: file identities and bad verdicts (None: start over).

    An index from another version or format, or one that cannot be parsed, is rebuilt
    from the data: it holds nothing the data does not.
    """
    try:
        document = json.loads(store.read_bytes())
        if document.get("flsilo_index") != INDEX_VERSION or document.get("format") != fmt:
            return None
        known = {str(r[0]): (int(r[2]), int(r[3]), str(r[4])) for r in document["records"]}
        bad = {
            (str(b[2]), int(b[3]), int(b[4])): str(b[1]) for b in document["bad"] if b[2]
        }  # only verdicts on a file's bytes are kept; the others are found again by the walk
        for key in bad:
            source = key[0].split("\0", 1)[0]
            known.setdefault(source, (key[1], key[2], ""))
        return {"known": known, "bad": bad, "digest": str(document["state_sha256"])}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
