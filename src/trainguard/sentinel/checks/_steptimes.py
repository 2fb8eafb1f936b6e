"""Step timelines for the straggler check, without a host sync on CUDA.

A :class:`StepTimeline` stamps five boundaries of each step (forward start and
end, arrival at the sentinel's collective, its end, optimizer step done) and
turns them into the per-step vector the statistics want: offsets from the
previous step's collective exit (the aligned point), the step time and the
previous step's wait in the collective.

On CPU a stamp is ``time.perf_counter()`` plus the thread's run-queue wait
(offsets exclude time spent waiting for a CPU), and a vector is ready at once. On
CUDA a stamp is a timing ``torch.cuda.Event`` recorded on the current stream
(host timestamps would only show when kernels were *queued*); a vector is ready
when its last event has completed, which :meth:`take_ready` checks with
``Event.query()``, never ``synchronize()``. Vectors thus arrive a step or two
late on CUDA, tagged with their step.

:class:`HostIO` moves those few floats to and from the device for the step
collective: on CUDA through pinned buffers with non-blocking copies and events.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import torch

from trainguard.sentinel.checks._runqueue import RunQueueClock

__all__ = ["VECTOR", "HostIO", "StepTimeline"]

#: The gathered vector (see :meth:`StepTimeline.take_ready`).
VECTOR = 8
_NAN = float("nan")


class StepTimeline:
    """Boundary stamps of recent steps and the vectors made from them."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self._cur: dict[str, Any] = {}
        self._prev: dict[str, Any] = {}
        self._prev_red2: Any = None
        self._pending: deque[tuple[int, tuple[Any, ...]]] = deque(maxlen=64)
        self._runqueue = RunQueueClock()

    def _stamp(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            return event
        # Wall clock and run-queue wait read together: an offset subtracts only
        # the waiting that happened inside it.
        return (time.perf_counter(), self._runqueue.thread_seconds())

    def _elapsed(self, a: Any, b: Any) -> float:
        """Wall time from stamp ``a`` to stamp ``b``."""
        if a is None or b is None:
            return _NAN
        if self.cuda:
            return float(a.elapsed_time(b)) / 1000.0
        return float(b[0] - a[0])

    def _offset(self, a: Any, b: Any) -> float:
        """Time from ``a`` to ``b`` that was this thread's own: wall minus run-queue wait.

        Waiting for a CPU (a busy host) is not the rank's doing; a sleep is, and a
        sleeping thread does not wait on the run queue. Without this a crowded
        host's ranks take turns looking like stragglers.
        """
        if self.cuda or a is None or b is None:
            return self._elapsed(a, b)
        return float((b[0] - a[0]) - (b[1] - a[1]))

    def mark(self, name: str) -> None:
        """Stamp a boundary: ``forward_start`` (first per step), ``forward_end`` and
        ``backward_end`` (last per step), ``reduce_end``, ``after_step``."""
        if name == "forward_start" and name in self._cur:
            return
        self._cur[name] = self._stamp()

    def before_step(self, step: int) -> None:
        """Stamp the arrival at the collective and queue this step's vector."""
        self._cur["before_step"] = self._stamp()
        prev = self._prev
        if "reduce_end" in prev:
            stamps = (
                prev.get("reduce_end"),
                prev.get("after_step"),
                self._cur.get("forward_start"),
                self._cur.get("forward_end"),
                self._cur.get("backward_end"),
                self._cur["before_step"],
                self._prev_red2,
                prev.get("before_step"),
            )
            self._pending.append((step, stamps))

    def end_step(self) -> None:
        """Rotate: this step's stamps become the previous step's."""
        self._prev_red2 = self._prev.get("reduce_end")
        self._prev, self._cur = self._cur, {}

    def close(self) -> None:
        self._runqueue.close()

    def _ready(self, stamps: tuple[Any, ...]) -> bool:
        if not self.cuda:
            return True
        # Every event: the backward-end callback may record on another stream.
        return all(bool(e.query()) for e in stamps if e is not None)

    def take_ready(self) -> tuple[int, list[float]] | None:
        """The newest complete vector (older complete ones are dropped), or ``None``.

        Layout (:data:`VECTOR` numbers): step; optimizer done, forward start and
        forward end, each since the previous collective's exit; backward end since
        then (evidence only: it includes the job's own collectives, where peers
        wait); arrival at the sentinel's collective since backward end (the code
        between ``loss.backward()`` and ``optimizer.step()``); step time; the
        previous step's wait in the sentinel's collective.
        """
        found: tuple[int, list[float]] | None = None
        while self._pending and self._ready(self._pending[0][1]):
            step, (red, post, fwd0, fwd1, bwd, pre, red2, prev_pre) = self._pending.popleft()
            found = (
                step,
                [
                    float(step),
                    self._offset(red, post),
                    self._offset(red, fwd0),
                    self._offset(red, fwd1),
                    self._offset(red, bwd),
                    self._offset(bwd, pre),
                    self._elapsed(red2, red),
                    self._elapsed(prev_pre, red),
                ],
            )
        return found


class HostIO:
    """Host floats to a device tensor and gathered rows back, no sync on CUDA."""

    def __init__(self, device: torch.device, width: int, *, ring: int = 4) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.width = width
        self._up: list[tuple[torch.Tensor, Any]] = []
        self._down: deque[tuple[torch.Tensor, Any]] = deque()
        if self.cuda:
            self._up = [
                (torch.empty(width, dtype=torch.float64, pin_memory=True), None)
                for _ in range(ring)
            ]
        self._up_next = 0

    def upload(self, values: list[float]) -> torch.Tensor | None:
        """A device tensor holding ``values``; ``None`` if every staging buffer is busy."""
        if not self.cuda:
            return torch.tensor(values, dtype=torch.float64)
        host, event = self._up[self._up_next]
        if event is not None and not event.query():
            return None  # the GPU is far behind; skip a step rather than sync
        host.copy_(torch.tensor(values, dtype=torch.float64))
        dev = host.to(self.device, non_blocking=True)
        done = torch.cuda.Event()  # type: ignore[no-untyped-call]
        done.record()
        self._up[self._up_next] = (host, done)
        self._up_next = (self._up_next + 1) % len(self._up)
        return dev

    def download(self, rows: torch.Tensor) -> None:
        """Start copying gathered ``rows`` to the host; collect them with :meth:`poll`."""
        if not self.cuda:
            self._down.append((rows.detach().clone(), None))
            return
        host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
        host.copy_(rows, non_blocking=True)
        done = torch.cuda.Event()  # type: ignore[no-untyped-call]
        done.record()
        self._down.append((host, done))

    def poll(self) -> list[list[list[float]]]:
        """Every downloaded ``[world, width]`` block whose copy has completed, oldest first."""
        out: list[list[list[float]]] = []
        while self._down and (self._down[0][1] is None or self._down[0][1].query()):
            host, _ = self._down.popleft()
            # Host memory already (CPU tensor or a completed pinned copy): no device sync.
            out.append([[float(v) for v in row] for row in host.tolist()])
        return out
