"""Hash the artifacts ``flsilo verify`` names from process start, hiding start-up behind the pass.

A whole-file SHA-256 signature cannot be checked faster than one pass over the file, so
that pass starts first: :func:`start_for` runs while the command line is still importing
(standard library only) and hashes each named ``*.safetensors`` file, one after another:
one thread reads (``pread`` into a few big buffers) while another hashes (``hashlib``
without the GIL), and, when asked, a third hashes the data section as well.

The verify command claims a file's pass (:func:`claim`) and hands it to
:func:`flsilo.format.artifact.verify_file`, which still reads the file itself for its structure
and float checks, and takes these digests (:meth:`Job.digests`) only when the file
provably did not change: the same device, inode, size, modification and change times when
this pass opened it, when it ended, when the verifier opened it and when the verifier
finished; and the same data offset. Otherwise the verifier hashes its own read
(:class:`flsilo.format.readpass.StaleDigests`). Nothing here judges a file: a file that cannot be
opened or is not regular is left to the verifier. (A forked child instead of the thread
was measured and removed: docs/benchmarks.md.)
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path

CHUNK_BYTES = 8 * 1024 * 1024
BUFFERS = 3
SWITCH_INTERVAL_S = 0.0005
SUFFIX = ".safetensors"
ROOT_OPTIONS_WITH_VALUE = frozenset({"--threads"})
VERIFY_OPTIONS_WITH_VALUE = frozenset({"--key", "--signers", "--at", "--require-release"})

Identity = tuple[int, int, int, int, int]


def identity(st: os.stat_result) -> Identity:
    """What must not change between two reads for them to have seen the same bytes."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash_from(starts: list[int], fd: int, size: int, job: Job) -> list[bytes | None]:
    """SHA-256 of ``fd``'s bytes from each of ``starts`` to ``size``, in one pipelined read.

    This thread reads (``pread`` into a few big buffers) while one thread per digest hashes
    what was read before: the copy out of the page cache overlaps the hashing. None for a
    digest that could not be taken (the file shrank, or the job was cancelled).
    """
    buffers = [bytearray(min(CHUNK_BYTES, max(size, 1))) for _ in range(BUFFERS)]
    inboxes: list[queue.SimpleQueue[tuple[int, int, int] | None]] = [
        queue.SimpleQueue() for _ in starts
    ]
    released: queue.SimpleQueue[int] = queue.SimpleQueue()
    results: list[bytes | None] = [None] * len(starts)

    def consume(i: int) -> None:
        if i < len(_hash_cpus):
            os.sched_setaffinity(0, {_hash_cpus[i]})
        h = hashlib.sha256()
        while (item := inboxes[i].get()) is not None:
            k, offset, n = item
            skip = min(max(starts[i] - offset, 0), n)
            if skip < n:
                h.update(memoryview(buffers[k])[skip:n])
            released.put(k)
        results[i] = h.digest()

    threads = [
        threading.Thread(target=consume, args=(i,), name="flsilo-prehash-hash", daemon=True)
        for i in range(len(starts))
    ]
    for t in threads:
        t.start()
    uses = [0] * BUFFERS
    position, k, complete = 0, 0, True
    try:
        while position < size and not job.cancelled:
            while uses[k]:  # wait until every digest is done with buffer k
                uses[released.get()] -= 1
            n = os.preadv(
                fd, [memoryview(buffers[k])[: min(CHUNK_BYTES, size - position)]], position
            )
            if n <= 0:
                complete = False  # the file shrank: the verifier will say so
                break
            uses[k] = len(starts)
            for box in inboxes:
                box.put((k, position, n))
            position += n
            k = (k + 1) % BUFFERS
            if job.progress is not None:
                job.progress()
    finally:
        for box in inboxes:
            box.put(None)
        for t in threads:
            t.join()
    if not complete or job.cancelled:
        return [None] * len(starts)
    return results


class Job:
    """Both SHA-256 digests of one file, taken from process start."""

    def __init__(self, path: str, *, data: bool) -> None:
        self.path = path
        self.data = data
        self.cancelled = False
        self.progress: Callable[[], object] | None = None  # called after each chunk read
        self.started = False
        self.done = threading.Event()
        self.file_digest: bytes | None = None
        self.data_digest: bytes | None = None
        self.data_start = -1
        self.before: Identity | None = None
        self.after: Identity | None = None

    def starts_wanted(self, data_start: int = 0) -> list[int]:
        """Where each digest starts: the file at 0, and the data section if asked."""
        return [0, data_start] if self.data else [0]

    def run(self) -> None:
        try:
            self._run()
        except OSError:
            pass
        finally:
            self.done.set()

    def _run(self) -> None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < 8:
                return
            self.before = identity(st)
            (header_len,) = struct.unpack("<Q", os.pread(fd, 8, 0).ljust(8, b"\0"))
            start = 8 + header_len
            if start > st.st_size:
                return
            digests = _hash_from(self.starts_wanted(start), fd, st.st_size, self)
            self.file_digest, self.data_digest = digests[0], digests[1] if self.data else None
            self.data_start = start
            self.after = identity(os.fstat(fd))
        finally:
            os.close(fd)

    def digests(
        self, opened: os.stat_result, finished: os.stat_result, data_start: int
    ) -> tuple[bytes, bytes | None]:
        """(file sha256, data-section sha256 or None) if they describe the bytes read.

        ``opened``, ``finished``: the verifier's ``fstat`` of the file when it opened it
        and when it finished. Waits for the pass to end. Raises
        :class:`~flsilo.format.readpass.StaleDigests` unless the file's identity and times were the
        same at all four moments and the data section starts where the verifier found it.
        """
        from flsilo.format.readpass import StaleDigests  # imported by then; not at start-up

        self.done.wait()
        same = self.before == self.after == identity(opened) == identity(finished)
        if not same or data_start != self.data_start:
            raise StaleDigests(self.path)
        if self.file_digest is None or (self.data and self.data_digest is None):
            raise StaleDigests(self.path)
        return self.file_digest, self.data_digest


_jobs: dict[str, Job] = {}
_queue: list[Job] = []
_lock = threading.Lock()
_running = False
_hash_cpus: list[int] = []


def _worker(switch_interval: float, main: int, cpus: set[int] | None) -> None:
    global _running
    while True:
        with _lock:
            if not _queue:
                _running = False
                sys.setswitchinterval(switch_interval)
                if cpus is not None:
                    os.sched_setaffinity(main, cpus)
                return
            job = _queue.pop(0)
            if job.cancelled:
                job.done.set()
                continue
            job.started = True
        job.run()


def start(paths: list[str], *, data: bool) -> None:
    """Hash ``paths`` one after another on a background thread; ``data``: also the data section.

    Each file is read once, by this thread, while one thread per digest hashes it.
    """
    global _running
    with _lock:
        for p in paths:
            key = os.path.abspath(p)
            if key not in _jobs:
                _jobs[key] = Job(p, data=data)
                _queue.append(_jobs[key])
        if _running or not _queue:
            return
        _running = True
        # The hashing threads take the GIL back after every chunk; while the main thread
        # imports, a shorter switch interval keeps them from waiting 5 ms each time.
        previous = sys.getswitchinterval()
        sys.setswitchinterval(min(previous, SWITCH_INTERVAL_S))
        cpus = _reserve_cpus(len(_queue[0].starts_wanted()))
    args = (previous, threading.get_native_id(), cpus)
    threading.Thread(target=_worker, args=args, name="flsilo-prehash", daemon=True).start()


def _reserve_cpus(hashers: int) -> set[int] | None:
    """Give each hashing thread a CPU of its own and the rest of the process the others.

    Keeps the imports and the reading thread from preempting the hash on a small machine.
    Returns this thread's CPUs to restore when the passes end (None: nothing was changed).
    """
    global _hash_cpus
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None
    if len(cpus) <= hashers:
        return None
    ordered = sorted(cpus)
    _hash_cpus = ordered[-hashers:]
    try:
        os.sched_setaffinity(0, set(ordered[:-hashers]))
    except OSError:
        _hash_cpus = []
        return None
    return cpus


def claim(path: Path) -> Job | None:
    """The early job for ``path`` if one has started; a job not started yet is dropped."""
    with _lock:
        job = _jobs.pop(os.path.abspath(path), None)
        if job is not None and not job.started:
            job.cancelled = True
            return None
    return job


def verify_targets(argv: list[str]) -> list[str]:
    """The artifacts ``flsilo [ROOT OPTIONS] verify ...`` names; [] for any other command.

    A guess from the raw command line, before it is parsed: a wrong guess only costs a
    wasted pass, since :meth:`Job.digests` is used only for the file the verifier opened.
    """
    if not argv or Path(argv[0]).name != "flsilo":
        return []
    args, i = argv[1:], 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in ROOT_OPTIONS_WITH_VALUE else 1
    if i >= len(args) or args[i] != "verify":
        return []
    files: list[str] = []
    skip = False
    for arg in args[i + 1 :]:
        if skip:
            skip = False
        elif arg in VERIFY_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            name = arg.removesuffix(".sig")
            if name.endswith(SUFFIX) and name not in files:
                files.append(name)
    return files


def start_for(argv: list[str]) -> None:
    """If this process is ``flsilo verify FILE...``, start hashing every artifact it names."""
    targets = verify_targets(argv)
    if targets:
        start(targets, data=False)  # `flsilo verify` reports the file's digest only
