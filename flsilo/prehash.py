"""Hash the artifacts ``flsilo verify`` names from process start, hiding start-up behind the pass.

A whole-file SHA-256 signature cannot be checked faster than one pass over the file, so
that pass starts first: :func:`start_for` runs while the command line is still importing
(standard library only) and hashes each named ``*.safetensors`` file, one after another:
one thread reads (``pread`` into a few big buffers) while another hashes (``hashlib``
without the GIL), and, when asked, a third hashes the data section as well.

The verifier still reads the file itself for its structure and float checks, and takes
these digests (:meth:`Job.digests`) only when the file provably did not change: the same
device, inode, size, modification and change times when this pass opened it, when it
ended, when the verifier opened it and when the verifier finished; and the same data
offset. Otherwise the verifier hashes its own read (:class:`Changed`). Nothing here
judges a file: a file that cannot be opened or is not regular is left to the verifier.

Where ``os.fork`` exists, :func:`start_for` runs the pass in a child process instead (see
:func:`fork_pass`): the child hashes without ever waiting for the GIL the imports hold, and
reports each digest with the file's identity at its open and at its end over a pipe. A
child that dies, stalls for :data:`STALL_S` or writes anything malformed leaves its files
to the verifier's own hash, like a changed file. The thread is the fallback.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import queue
import select
import signal
import stat
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path

CHUNK_BYTES = 8 * 1024 * 1024
BUFFERS = 3
SWITCH_INTERVAL_S = 0.0005
STALL_S = 20.0  # no word from the child for this long: it is stuck; the verifier hashes
SUFFIX = ".safetensors"
ROOT_OPTIONS_WITH_VALUE = frozenset({"--threads"})
VERIFY_OPTIONS_WITH_VALUE = frozenset({"--key", "--signers", "--at", "--require-release"})

Identity = tuple[int, int, int, int, int]


class Changed(Exception):
    """The early digests do not provably describe the bytes the verifier read."""


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
        self.child: _Child | None = None

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
        self, scanned: Identity, scanned_after: Identity, data_start: int
    ) -> tuple[bytes, bytes | None]:
        """(file sha256, data-section sha256 or None) if they describe the bytes read.

        Waits for the pass to end. Raises :class:`Changed` unless the file's identity and
        times were the same at all four moments and the data section starts where the
        verifier found it.
        """
        if self.child is not None:
            self.child.collect(self)
        self.done.wait()
        same = self.before == self.after == scanned == scanned_after
        if not same or data_start != self.data_start:
            raise Changed(self.path)
        if self.file_digest is None or (self.data and self.data_digest is None):
            raise Changed(self.path)
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


@atexit.register
def _cancel_all() -> None:
    """A command that ends early (a usage error, a missing ``.sig``) stops the passes."""
    with _lock:
        for job in [*_jobs.values(), *_queue]:
            job.cancelled = True
    for child in _children:
        child.close()


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
    if targets and not fork_pass(targets):
        start(targets, data=False)  # `flsilo verify` reports the file's digest only


class _Child:
    """The forked pass: its process, the read end of its pipe and the jobs it reports on."""

    def __init__(self, pid: int, fd: int, jobs: list[Job], cpus: set[int] | None) -> None:
        self.pid = pid
        self.cpus = cpus  # the forking thread's CPUs before the pass, given back at its end
        self.forker = threading.get_native_id()
        self.fd = fd
        self.jobs = jobs
        self.pending = b""
        self.closed = False
        self.lock = threading.Lock()

    def collect(self, job: Job) -> None:
        """Read the child's reports until ``job``'s came, or the child ended, stalled or lied."""
        with self.lock:
            while not job.done.is_set() and not self.closed:
                if not self._read_some():
                    self._close()
            if all(j.done.is_set() for j in self.jobs):
                self._close()

    def _read_some(self) -> bool:
        """Take what the child wrote; False at its end, after a stall, or on a malformed line."""
        try:  # poll, not select: no FD_SETSIZE limit on the pipe's descriptor
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            if not poller.poll(STALL_S * 1000):
                return False
            data = os.read(self.fd, 65536)
        except (AttributeError, OSError, ValueError):
            return False
        if not data:
            return False
        *lines, self.pending = (self.pending + data).split(b"\n")
        try:
            for line in lines:
                self._report(line)
        except (ValueError, IndexError):
            return False
        return len(self.pending) < 4096

    def _report(self, line: bytes) -> None:
        """Take one line: ``+`` (progress), ``- I`` (no digest) or ``= I HEX BEFORE AFTER START``."""
        fields = line.split(b" ")
        if fields == [b"+"]:
            return
        job = self.jobs[int(fields[1])] if len(fields) in (2, 14) else None
        if job is None or job.done.is_set() or fields[0] not in (b"-", b"="):
            raise ValueError(line)
        if fields[0] == b"=":
            if len(fields) != 14:
                raise ValueError(line)
            digest = bytes.fromhex(fields[2].decode("ascii"))
            numbers = [int(f) for f in fields[3:]]
            if len(digest) != 32 or min(numbers) < 0:
                raise ValueError(line)
            job.file_digest = digest
            job.before = (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4])
            job.after = (numbers[5], numbers[6], numbers[7], numbers[8], numbers[9])
            job.data_start = numbers[10]
        job.done.set()

    def close(self) -> None:
        with self.lock:
            self._close()

    def _close(self) -> None:
        """Stop and reap the child (killing a finished, unreaped child is harmless)."""
        if self.closed:
            return
        self.closed = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.fd)
        if self.cpus is not None:
            try:
                os.sched_setaffinity(self.forker, self.cpus)
            except OSError:
                pass
        for job in self.jobs:
            job.done.set()  # a job with no report has no digest: the verifier hashes


_children: list[_Child] = []


def fork_pass(paths: list[str]) -> bool:
    """Hash ``paths`` in a child process; False where that cannot be done (use the thread).

    Only from a process with one thread (a fork copies no other thread, and a lock another
    thread held would stay held in the child). Until the pass ends this process runs on all
    CPUs but one, which the child's hashing thread has to itself.
    """
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    read_end, write_end = os.pipe()
    cpus = _reserve_cpus(1)
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        return False
    if pid == 0:  # the child: never returns, never runs the parent's exit handlers
        try:
            os.close(read_end)
            _child_main(paths, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    jobs = [Job(p, data=False) for p in paths]
    child = _Child(pid, read_end, jobs, cpus)
    with _lock:
        for job in jobs:
            job.started = True
            job.child = child
            _jobs.setdefault(os.path.abspath(job.path), job)
        _children.append(child)
    return True


def _child_main(paths: list[str], out: int) -> None:
    """In the child: detach from the parent's files, then report on each path in turn.

    Each file is hashed as the thread pass does (one thread reads, one hashes on a CPU of
    its own); a ``+`` line after each chunk (2 bytes per 8 MiB: the pipe is full only
    after 256 GiB) tells the parent the pass is moving.
    """
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # the parent's caller may wait for its output to close
    try:
        highest = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        highest = 65536
    os.closerange(3, out)
    os.closerange(out + 1, max(out + 1, null + 1, highest))
    for i, path in enumerate(paths):
        job = Job(path, data=False)
        job.progress = lambda: os.write(out, b"+\n")
        job.run()
        os.write(out, _report_line(i, job))


def _report_line(index: int, job: Job) -> bytes:
    """``= INDEX HEX BEFORE AFTER DATA_START`` for a digested file, else ``- INDEX``."""
    if job.file_digest is None or job.before is None or job.after is None:
        return f"- {index}\n".encode()
    numbers = " ".join(str(x) for x in (*job.before, *job.after, job.data_start))
    return f"= {index} {job.file_digest.hex()} {numbers}\n".encode()
