"""Parallel SHA-256 of many files, with the stat facts a fast re-check needs.

Verification time is dominated by hashing, so this is the one hot loop of
``env verify``. Choices, each measured on a torch environment:

* a few worker threads pull from one work list sorted biggest first, so a
  600 MB ``libtorch_cpu.so`` starts at once and small files fill the gaps;
* files up to 1 MiB are read with one ``readv`` into a reused buffer, larger
  ones are hashed straight from an ``mmap`` (``hashlib`` releases the GIL on
  big buffers, so two threads really hash in parallel);
* ``fstat`` on the open descriptor gives size, times, inode and mode of the
  exact file that was hashed, with no second path lookup;
* a file can also be only stat-ed (``STAT``) or have only its first bytes read
  (``HEAD``, for ``.pyc`` headers): 11,000 bytecode files cost a ``stat`` each.
"""

from __future__ import annotations

import base64
import hashlib
import mmap
import os
import stat
import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = [
    "HASH",
    "HEAD",
    "STAT",
    "FileFacts",
    "HashQueue",
    "b64_digest",
    "default_workers",
    "hash_files",
]

#: What to learn about a file: its stat facts only, also its first 16 bytes, or its hash.
STAT, HEAD, HASH = 0, 1, 2
_SMALL = 1 << 20
_HEAD_BYTES = 16  # a .pyc header
_b64encode = base64.urlsafe_b64encode
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


class FileFacts(NamedTuple):
    """What was learned about one file: its digest (when hashed) and stat facts.

    ``b64`` is the digest in RECORD spelling (urlsafe base64, no padding),
    computed in the worker so that comparing with RECORD is one string test.
    ``head`` holds the first 16 bytes (``HEAD`` and ``HASH`` modes).
    ``error`` is set (and the rest zero) when the file could not be read.
    """

    sha256: bytes | None
    b64: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    mode: int
    head: bytes
    error: str | None = None


def _failed(reason: str, mode: int = 0) -> FileFacts:
    return FileFacts(None, "", 0, 0, 0, 0, mode, b"", reason)


def default_workers() -> int:
    """Two threads at least (hashing overlaps I/O), at most eight."""
    return max(2, min(8, os.cpu_count() or 2))


def b64_digest(digest: bytes) -> str:
    """The RECORD spelling of a digest: urlsafe base64 without padding."""
    return _b64encode(digest).rstrip(b"=").decode("ascii")


def _stat_only(path: str) -> FileFacts:
    try:
        st = os.stat(path)
    except OSError as exc:
        return _failed(exc.strerror or repr(exc))
    return FileFacts(
        None, "", st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode, b""
    )


def _read_one(path: str, mode: int, buf: bytearray) -> FileFacts:
    if mode == STAT:
        return _stat_only(path)
    try:
        fd = os.open(path, _O_READ)
    except OSError as exc:
        return _failed(exc.strerror or repr(exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _failed("not a regular file", st.st_mode)
        size = st.st_size
        digest: bytes | None = None
        if mode == HEAD:
            head = os.read(fd, _HEAD_BYTES)
        elif size < _SMALL:
            n = os.readv(fd, [buf])
            if n >= _SMALL:  # grew past the buffer since fstat: hash all of it
                os.lseek(fd, 0, os.SEEK_SET)
                with os.fdopen(os.dup(fd), "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").digest()
                head = bytes(buf[:_HEAD_BYTES])
            else:
                view = memoryview(buf)[:n]
                digest = hashlib.sha256(view).digest()
                head = bytes(view[:_HEAD_BYTES])
                size = n
        else:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
                digest = hashlib.sha256(mm).digest()
                head = mm[:_HEAD_BYTES]
        b64 = _b64encode(digest).rstrip(b"=").decode("ascii") if digest is not None else ""
        return FileFacts(
            digest, b64, size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode, head, None
        )
    except (OSError, ValueError) as exc:
        return _failed(getattr(exc, "strerror", None) or repr(exc))
    finally:
        os.close(fd)


class HashQueue:
    """Files handed to worker threads as they become known; :meth:`join` returns all facts.

    ``env verify`` adds each distribution's files as soon as its RECORD is
    parsed (the biggest RECORD first), so the threads hash libtorch while the
    other RECORDs are still being read, and the caller walks the tree while
    they finish.
    """

    def __init__(
        self, *, workers: int | None = None, progress: Callable[[int, int, str], None] | None = None
    ) -> None:
        self.paths: list[str] = []
        self._modes: list[int] = []
        self._single: list[bool] = []  # big files: handed out one at a time
        self._results: list[FileFacts | None] = []
        self._cursor = 0
        self._closed = False
        self._cond = threading.Condition()
        self._progress = progress
        self._threads = [
            threading.Thread(target=self._work, daemon=True)
            for _ in range(workers or default_workers())
        ]
        for t in self._threads:
            t.start()

    def add(self, paths: Sequence[str], modes: Sequence[int], *, big_first: int = 0) -> None:
        """Queue ``paths``; the first ``big_first`` are big files, biggest first."""
        with self._cond:
            self.paths.extend(paths)
            self._modes.extend(modes)
            self._single.extend(i < big_first for i in range(len(paths)))
            self._results.extend([None] * len(paths))
            self._cond.notify_all()

    def _take(self) -> tuple[int, int] | None:
        with self._cond:
            while self._cursor >= len(self.paths):
                if self._closed:
                    return None
                self._cond.wait()
            start = self._cursor
            step = 1 if self._single[start] else 64
            end = min(start + step, len(self.paths))
            self._cursor = end
            return start, end

    def _work(self) -> None:
        buf = bytearray(_SMALL)
        paths, modes, results = self.paths, self._modes, self._results
        while (span := self._take()) is not None:
            start, end = span
            for i in range(start, end):
                results[i] = _read_one(paths[i], modes[i], buf)
            if self._progress is not None:
                self._progress(end, len(paths), paths[start])

    def join(self) -> list[FileFacts]:
        """Close the queue, help with what is left, and return facts in the order added."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._work()
        for t in self._threads:
            t.join()
        missing = _failed("not read")
        return [r if r is not None else missing for r in self._results]


def hash_files(
    paths: Sequence[str],
    *,
    modes: Sequence[int] | None = None,
    big_first: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[FileFacts]:
    """Read every file in ``paths`` in parallel; results in the same order.

    Args:
        paths: files to read.
        modes: per path, ``STAT``, ``HEAD`` or ``HASH`` (default: all ``HASH``).
        big_first: the first ``big_first`` paths are big files (the caller put
            them first, biggest first): handed out one at a time so every
            thread starts on one; the rest go in batches.
        workers: threads; default :func:`default_workers` (never more than files).
        progress: called now and then with ``(done, total, path)`` from a worker.
    """
    count = min(workers or default_workers(), max(1, len(paths)))
    queue = HashQueue(workers=count - 1, progress=progress)  # the caller is a worker too
    queue.add(paths, modes if modes is not None else [HASH] * len(paths), big_first=big_first)
    return queue.join()
