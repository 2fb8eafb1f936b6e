"""How long threads waited for a CPU (Linux schedstat), to tell a busy host from a sleep.

A rank that is late because the host is crowded spent the time on a CPU run
queue; a rank that sleeps did not. ``/proc/.../schedstat`` holds, per thread,
"time spent waiting on a run queue" in nanoseconds. Reads are one ``pread`` on
a descriptor kept open (about 2 us each); everything degrades to zero where
the files do not exist (other kernels, a hardened /proc).
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["RunQueueClock"]

_SELF = "/proc/thread-self/schedstat"


def _wait_ns(fd: int) -> int:
    return int(os.pread(fd, 96, 0).split()[1])


class RunQueueClock:
    """Run-queue waiting time of the calling thread."""

    def __init__(self) -> None:
        self._thread_fds: dict[int, int] = {}
        self._available = os.path.exists(_SELF)

    def thread_seconds(self) -> float:
        """Seconds the calling thread has waited on a run queue since it started."""
        if not self._available:
            return 0.0
        ident = threading.get_ident()
        try:
            fd = self._thread_fds.get(ident)
            if fd is None:
                # thread-self resolves when opened: one descriptor per thread.
                fd = self._thread_fds[ident] = os.open(_SELF, os.O_RDONLY)
            return _wait_ns(fd) / 1e9
        except (OSError, IndexError, ValueError):
            self._available = False
            return 0.0

    def close(self) -> None:
        for fd in self._thread_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._thread_fds.clear()
