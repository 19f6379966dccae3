"""One read of a file: every chunk through the hashes, the checks and a copy at once.

:class:`ArtifactReader` reads an open stream once, up to the size ``fstat`` gave; each big
chunk goes to the whole file's digests, the data section's SHA-256, the caller's own check
and an optional copy, in parallel on a shared pool of threads (:func:`run_on_chunk`, also
used by the hub to write and hash a package at once). Nothing here judges what it reads:
:mod:`flsilo.format.artifact` parses and verifies, the kits decide.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO

from flsilo.runtime import progress
from flsilo.signing.sshsig import new_hash

CHUNK_BYTES = 16 * 1024 * 1024
PARALLEL_MIN_BYTES = 256 * 1024
"""Below this a chunk's jobs run one after another: a thread hand-off would cost more."""


def _hash_pool() -> ThreadPoolExecutor:
    """Threads for the per-chunk work of a read: hashlib and file writes release the GIL."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="flsilo-hash"
            )
        return _POOL


def _forget_pool() -> None:  # a forked child has none of the parent's threads
    global _POOL
    _POOL = None


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_on_chunk(jobs: list[Callable[[memoryview], object]], chunk: memoryview) -> None:
    """Run every job on ``chunk`` at once (the first on this thread); return when all are done.

    Jobs are leaves (a hash update, a write, a float check): none waits for another, so
    the shared pool cannot deadlock. A failing job is raised only after every other job
    has finished with the buffer, so the caller may reuse it.
    """
    if len(jobs) <= 1 or len(chunk) < PARALLEL_MIN_BYTES:
        for job in jobs:
            job(chunk)
        return
    futures = [_hash_pool().submit(job, chunk) for job in jobs[1:]]
    try:
        jobs[0](chunk)
    finally:
        wait(futures)
    for f in futures:
        f.result()


class ArtifactReader:
    """Reads one stream once: every byte goes to the hashes and, optionally, a copy.

    The whole file's digests (what a signature covers), the data section's SHA-256 (from
    :meth:`start_data` on) and the copy of a big chunk run on the pool while the caller's
    own check of it runs on this thread and, when the caller reads into a second buffer,
    while the next chunk is read: the digests need one pass over the bytes, and the read
    and the checks hide behind it. A buffer whose chunk is still being hashed or copied is
    waited for before it is read into again. ``size`` is what ``fstat`` said; nothing beyond
    it is ever read, so a file that grows cannot make a reader loop. After a failure,
    :meth:`drain` finishes the pass so the file's sha256 and the copy are complete without
    opening the file again.
    """

    def __init__(
        self,
        fh: io.BufferedIOBase,
        size: int,
        *,
        copy_to: BinaryIO | None = None,
        data_digest: bool = True,
    ) -> None:
        self.fh = fh
        self.size = size
        self.copy_to = copy_to
        self.position = 0
        self._hashes = {"sha256": new_hash("sha256")}
        self._data_hash: Any = None
        self._data_digest = data_digest
        self._pending: list[Future[object]] = []
        self._pending_buffer: object = None

    def want(self, algorithm: str) -> None:
        """Also compute ``algorithm`` (only before the first byte is read)."""
        if algorithm not in self._hashes:
            assert self.position == 0
            self._hashes[algorithm] = new_hash(algorithm)

    def start_data(self) -> None:
        """Every byte read from here on is also hashed as the data section."""
        if self._data_digest:
            self._data_hash = hashlib.sha256()

    def settle(self) -> None:
        """Wait for the last chunk's hashes and copy; raise the first error one of them met."""
        pending, self._pending, self._pending_buffer = self._pending, [], None
        if pending:
            wait(pending)
            for f in pending:
                f.result()

    def _settle_quietly(self) -> None:
        """Wait for the last chunk's jobs while another error is already on its way out."""
        pending, self._pending, self._pending_buffer = self._pending, [], None
        wait(pending)

    def _feed(
        self, chunk: memoryview | bytes, check: Callable[[memoryview], object] | None = None
    ) -> None:
        """Hash (and copy) ``chunk`` after the chunks before it; ``check`` it meanwhile."""
        view = memoryview(chunk)
        ordered: list[Callable[[memoryview], object]] = []
        if self._data_hash is not None:
            ordered.append(self._data_hash.update)
        ordered.extend(h.update for h in self._hashes.values())
        if self.copy_to is not None:
            ordered.append(self.copy_to.write)
        self.settle()  # each digest and the copy take the chunks in order
        if len(view) < PARALLEL_MIN_BYTES:
            for job in ordered:
                job(view)
        else:
            pool = _hash_pool()
            self._pending = [pool.submit(job, view) for job in ordered]
            self._pending_buffer = view.obj
        self.position += len(view)  # hashed (or being hashed), whatever the check says
        progress.advance(len(view))
        if check is not None:
            try:
                check(view)
            except BaseException:
                self._settle_quietly()
                raise

    def read(self, n: int) -> bytes:
        data = self.fh.read(max(0, min(n, self.size - self.position)))
        self._feed(data)
        return data

    def readinto(
        self, view: memoryview, check: Callable[[memoryview], object] | None = None
    ) -> int:
        """Fill ``view`` (up to ``size``); ``check`` sees the chunk while it is hashed."""
        want = min(len(view), self.size - self.position)
        if want <= 0:
            return 0
        if self._pending and view.obj is self._pending_buffer:
            self.settle()  # that buffer's last chunk is still being hashed
        try:
            n = self.fh.readinto(view[:want]) or 0
        except BaseException:
            self._settle_quietly()
            raise
        self._feed(view[:n], check)
        return n

    def drain(self) -> None:
        """Read whatever is left up to ``size`` (after a failure), so digests cover the file;
        two buffers in turn, so that one is read while the other is hashed."""
        size = min(CHUNK_BYTES, max(self.size - self.position, 1))
        views = [memoryview(bytearray(size)), memoryview(bytearray(size))]
        turn = 0
        while self.readinto(views[turn]):
            turn ^= 1
        self.settle()

    def grew(self) -> bool:
        """Whether the stream holds more than ``size`` (once the last chunk's jobs are done,
        so a refusal never leaves them running)."""
        self.settle()
        return bool(self.fh.read(1))

    def digests(self) -> dict[str, bytes]:
        """The whole file's digests, once every chunk read has been hashed."""
        self.settle()
        return {a: h.digest() for a, h in self._hashes.items()}

    @property
    def data_sha256(self) -> str:
        """The data section's sha256 hex digest (after :meth:`start_data`), else ''."""
        self.settle()
        return self._data_hash.hexdigest() if self._data_hash is not None else ""

    @property
    def complete(self) -> bool:
        return self.position == self.size

    @property
    def sha256(self) -> str:
        """The file's sha256 hex digest; empty unless the whole file went through."""
        if not self.complete:
            return ""
        return self.digests()["sha256"].hex()
