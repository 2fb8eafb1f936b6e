"""In-rank heartbeat: a daemon thread that rewrites the rank's record every interval.

The thread proves the *process* is alive (a stopped or dead process writes
nothing; a main thread in ``time.sleep`` does not stop it). The ``step`` field
proves *training* progresses: sentinel checks call :func:`note_step` once per
step, so a rank whose sentinel was silenced keeps beating with a frozen step,
which the supervisor can tell apart from a dead rank.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time

from trainguard.sentinel.launcher._jobdir import (
    ENV_HEARTBEAT_INTERVAL,
    Heartbeat,
    JobDir,
    local_host,
)

__all__ = ["HeartbeatThread", "current", "note_step", "start_from_env"]

DEFAULT_INTERVAL = 1.0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class HeartbeatThread:
    """Writes this rank's :class:`Heartbeat` into the job directory every ``interval`` s."""

    def __init__(self, job: JobDir, *, rank: int, local_rank: int, interval: float) -> None:
        self.job = job
        self.rank = rank
        self.local_rank = local_rank
        self.interval = interval
        self.pid = os.getpid()
        self.host = local_host()
        #: The last training step reported by a sentinel check (``None`` before any).
        self.step: int | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainguard-heartbeat", daemon=True)

    def start(self) -> HeartbeatThread:
        self.beat()
        self._thread.start()
        atexit.register(self._exiting)
        return self

    def beat(self) -> None:
        """Write one record now (also called by the thread)."""
        self._seq += 1
        record = Heartbeat(
            self.rank, self.local_rank, self.host, self.pid, self._seq, time.time(), self.step
        )
        # If the supervisor removed the job directory or the disk is full, the
        # missing heartbeat is what the supervisor reports: stay quiet here.
        with contextlib.suppress(OSError):
            self.job.write_heartbeat(record)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def _exiting(self) -> None:
        # A clean interpreter exit: tell the supervisor to stop expecting beats.
        if os.getpid() != self.pid:
            return
        self.stop()
        with contextlib.suppress(OSError):
            self.job.append_event("rank-exiting", rank=self.rank, pid=self.pid)


_CURRENT: HeartbeatThread | None = None
_LOCK = threading.Lock()


def current() -> HeartbeatThread | None:
    """This process's heartbeat thread, if one runs (``None`` in forked children)."""
    beat = _CURRENT
    return beat if beat is not None and beat.pid == os.getpid() else None


def note_step(step: int) -> None:
    """Record the training step in the next heartbeat (one attribute store: hot-path safe)."""
    beat = _CURRENT
    if beat is not None:
        beat.step = step


def start_from_env() -> HeartbeatThread | None:
    """Start the heartbeat when ``TRAINGUARD_JOB_DIR`` is set; idempotent per process."""
    global _CURRENT
    job = JobDir.from_env()
    if job is None:
        return None
    with _LOCK:
        existing = current()
        if existing is not None:
            return existing
        try:
            interval = float(os.environ.get(ENV_HEARTBEAT_INTERVAL, DEFAULT_INTERVAL))
        except ValueError:
            interval = DEFAULT_INTERVAL
        _CURRENT = HeartbeatThread(
            job,
            rank=_env_int("RANK", 0),
            local_rank=_env_int("LOCAL_RANK", 0),
            interval=max(interval, 0.05),
        ).start()
        return _CURRENT
