"""torchrun, observed: ``python -m trainguard.sentinel.launcher._agent TORCHRUN-ARGS``.

Runs ``torch.distributed.run.main`` in this process (torchrun used
programmatically, so its behaviour, flags and exit codes are torchrun's own)
with one addition: the elastic agent class is a subclass that writes every
worker's start (pid), exit (exit code, negative for a signal) and stop/continue
into the job directory's ``events.jsonl``. The subclass only observes; if this
torch's agent API differs, torchrun runs unobserved and the supervisor falls
back to heartbeats and /proc.

Stops are seen with ``waitid(WSTOPPED | WCONTINUED | WNOHANG)`` on each worker
(our children): the only reliable evidence of an uncatchable SIGSTOP. The
watcher never asks for ``WEXITED``, so it cannot steal torchrun's exit
statuses.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from trainguard.sentinel.launcher._jobdir import JobDir

__all__ = ["StopWatcher", "main"]


class StopWatcher:
    """Polls worker pids for stop/continue transitions on a daemon thread."""

    def __init__(self, job: JobDir, *, interval: float = 0.05) -> None:
        self.job = job
        self.interval = interval
        self._pids: dict[int, int] = {}  # pid -> global rank
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainguard-stopwatch", daemon=True)
        self._thread.start()

    def watch(self, pid: int, rank: int) -> None:
        with self._lock:
            self._pids[pid] = rank

    def close(self) -> None:
        self._stop.set()

    def poll_once(self) -> None:
        with self._lock:
            items = list(self._pids.items())
        for pid, rank in items:
            try:
                info = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WCONTINUED | os.WNOHANG)
            except ChildProcessError:
                with self._lock:
                    self._pids.pop(pid, None)
                continue
            if info is None:
                continue
            try:
                if info.si_code == os.CLD_STOPPED:
                    self.job.append_event(
                        "worker-stopped", rank=rank, pid=pid, signal=info.si_status
                    )
                elif info.si_code == os.CLD_CONTINUED:
                    self.job.append_event("worker-continued", rank=rank, pid=pid)
            except OSError:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()


def _observe(job: JobDir) -> bool:
    """Swap torchrun's agent class for an observing subclass; False if not possible."""
    try:
        from torch.distributed.elastic.agent.server.api import WorkerState
        from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
        from torch.distributed.launcher import api as launcher_api
    except ImportError:
        return False
    if getattr(launcher_api, "LocalElasticAgent", None) is not LocalElasticAgent:
        return False
    watcher = StopWatcher(job)

    class ObservedAgent(LocalElasticAgent):
        _tg_reported: set[tuple[int, int]]

        def _start_workers(self, worker_group: Any) -> dict[int, Any]:
            ids: dict[int, Any] = super()._start_workers(worker_group)
            self._tg_reported = set()
            for worker in worker_group.workers:
                pid = ids.get(worker.local_rank)
                if isinstance(pid, int):
                    watcher.watch(pid, worker.global_rank)
                    job.append_event(
                        "worker-started",
                        rank=worker.global_rank,
                        local_rank=worker.local_rank,
                        pid=pid,
                    )
            return ids

        def _monitor_workers(self, worker_group: Any) -> Any:
            result = super()._monitor_workers(worker_group)
            reported: set[tuple[int, int]] = getattr(self, "_tg_reported", set())
            if result.state == WorkerState.FAILED:
                for rank, failure in result.failures.items():
                    if (rank, failure.pid) not in reported:
                        reported.add((rank, failure.pid))
                        job.append_event(
                            "worker-exited",
                            rank=rank,
                            local_rank=failure.local_rank,
                            pid=failure.pid,
                            exitcode=failure.exitcode,
                        )
            elif result.state == WorkerState.SUCCEEDED:
                for worker in worker_group.workers:
                    if (
                        isinstance(worker.id, int)
                        and (worker.global_rank, worker.id) not in reported
                    ):
                        reported.add((worker.global_rank, worker.id))
                        job.append_event(
                            "worker-exited",
                            rank=worker.global_rank,
                            local_rank=worker.local_rank,
                            pid=worker.id,
                            exitcode=0,
                        )
            return result

    setattr(launcher_api, "LocalElasticAgent", ObservedAgent)  # noqa: B010 (not re-exported)
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """Run torchrun with ``argv`` (default: ``sys.argv[1:]``), observed when possible."""
    args = list(sys.argv[1:] if argv is None else argv)
    job = JobDir.from_env()
    if job is not None and not _observe(job):
        print(
            "trainguard: this torch's elastic agent cannot be observed; "
            "worker exits are known from heartbeats only",
            file=sys.stderr,
        )
    sys.argv = ["torchrun", *args]
    from torch.distributed.run import main as torchrun_main

    torchrun_main(args)


if __name__ == "__main__":
    main()
