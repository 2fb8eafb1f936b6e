"""The flag board: every check's trips in one small device tensor, reduced once per step.

Layout of the buffer that goes through the one ``all_reduce(MAX)`` per step::

    [0, n)              new trips since the last reduce: rank+1 of the tripping rank, else 0
    [n, 2n)             minus the step of those trips (-inf where none)
    [2n, 2n + W*g_1)    check 1's all-gathered values: rank r writes row r, others -inf
    ...                 one such region per check that asked for ``gather`` values

MAX over ranks is an OR of the trips that also names the (highest) tripping rank,
a MIN of the trip steps, and, for the gather regions, an all-gather: so one
collective of ``2n + W*sum(g)`` float64 values carries every decision and every
per-rank fingerprint. Everything here is device work; nothing syncs with the host.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["FlagBoard", "HostEvent"]

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class HostEvent:
    """A trip decided on the host (a seed call, a census finding), with its evidence."""

    slot: int
    step: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # set by the board; orders events against reduces


class FlagBoard:
    """Device-side trip flags plus host-side events, for ``n`` slots."""

    def __init__(
        self,
        n_slots: int,
        gather_sizes: list[int],
        *,
        device: torch.device,
        rank: int,
        world: int,
        group: dist.ProcessGroup | None,
    ) -> None:
        self.n = n_slots
        self.rank = rank
        self.world = world
        self.group = group
        self.device = device

        def zeros(n: int) -> torch.Tensor:
            return torch.zeros(n, dtype=torch.float64, device=device)

        def unset(n: int) -> torch.Tensor:
            return torch.full((n,), -1.0, dtype=torch.float64, device=device)

        self.new = zeros(n_slots)
        self.new_step = unset(n_slots)
        self.local = zeros(n_slots)
        self.local_first = unset(n_slots)
        self.glob = zeros(n_slots)
        self.glob_first = unset(n_slots)
        self.offsets: list[int] = []
        pos = 2 * n_slots
        for g in gather_sizes:
            self.offsets.append(pos)
            pos += world * g
        self.gather_sizes = gather_sizes
        self.buf = torch.empty(pos, dtype=torch.float64, device=device)
        self.gnew = zeros(n_slots)  # the last reduce's new trips, all ranks
        self._mark = float(rank + 1)
        self._events: list[HostEvent] = []
        self._pending: list[int] = []
        self._seq = 0
        self._applied = 0  # events up to this seq have reached the device flags
        self._lock = threading.Lock()
        self.reduced = False

    # -- writing trips -------------------------------------------------------------
    def trip(self, slot: int, cond: torch.Tensor, step: int) -> None:
        """Record ``cond`` (0-d bool/number tensor, true = tripped) for ``slot``; device-only."""
        hit = cond.to(torch.float64).clamp(0, 1).reshape(())
        cur = self.new[slot]
        self.new[slot] = torch.maximum(cur, hit * self._mark)
        first = self.new_step[slot]
        self.new_step[slot] = torch.where(
            (hit > 0) & (first < 0), torch.full_like(first, float(step)), first
        )

    def trip_host(self, event: HostEvent) -> None:
        """Record a host-decided trip; safe from any thread, applied at the next reduce."""
        with self._lock:
            self._seq += 1
            self._events.append(replace(event, seq=self._seq))
            self._pending.append(event.slot)

    def take_events(self, slot: int) -> list[HostEvent]:
        """Host events of ``slot`` that already went through a reduce (the rest wait)."""
        with self._lock:
            mine = [e for e in self._events if e.slot == slot and e.seq <= self._applied]
            self._events = [
                e for e in self._events if not (e.slot == slot and e.seq <= self._applied)
            ]
        return mine

    def has_events(self) -> bool:
        with self._lock:
            return bool(self._events)

    # -- the collective ------------------------------------------------------------
    def region(self, index: int) -> torch.Tensor:
        """Gather region ``index`` as a ``[world, g]`` view of the buffer."""
        g = self.gather_sizes[index]
        start = self.offsets[index]
        view: torch.Tensor = self.buf[start : start + self.world * g].view(self.world, g)
        return view

    def prepare(self, step: int) -> None:
        """Start a step's buffer: pending host trips applied, gather regions cleared."""
        self.apply_pending(step)
        if len(self.buf) > 2 * self.n:
            self.buf[2 * self.n :].fill_(_NEG_INF)
        self.reduced = False

    def apply_pending(self, step: int) -> None:
        """Fold host trips recorded since the last call into this rank's device flags.

        Called when a step starts, again right before its collective (so trips the
        checks make in ``before_step`` travel in the same step's reduce and veto
        vote), and before a final read-back (so nothing tripped late is lost).
        """
        with self._lock:
            pending, self._pending = self._pending, []
            self._applied = self._seq
        for slot in set(pending):
            self.new[slot] = self._mark
            first = self.new_step[slot]
            self.new_step[slot] = torch.where(first < 0, torch.full_like(first, float(step)), first)

    def publish(self, index: int, values: torch.Tensor) -> None:
        """Write this rank's row of gather region ``index``."""
        self.region(index)[self.rank].copy_(values.to(torch.float64).reshape(-1))

    def reduce(self) -> None:
        """The one collective of the step (a no-op without a process group)."""
        n = self.n
        self.buf[:n].copy_(self.new)
        self.buf[n : 2 * n].copy_(
            torch.where(self.new > 0, -self.new_step, torch.full_like(self.new, _NEG_INF))
        )
        if self.world > 1:
            dist.all_reduce(self.buf, op=dist.ReduceOp.MAX, group=self.group)
        gnew = self.buf[:n]
        gfirst = -self.buf[n : 2 * n]
        self.gnew.copy_(gnew)
        self.glob_first.copy_(
            torch.where((self.glob_first < 0) & (gnew > 0), gfirst, self.glob_first)
        )
        torch.maximum(self.glob, gnew, out=self.glob)
        self.local_first.copy_(
            torch.where((self.local_first < 0) & (self.new > 0), self.new_step, self.local_first)
        )
        torch.maximum(self.local, self.new, out=self.local)
        self.new.zero_()
        self.new_step.fill_(-1.0)
        self.reduced = True

    def reduce_new_only(self) -> list[float]:
        """A second, small collective for post-step vetoes; returns the new trips (host sync)."""
        buf = self.new.clone()
        if self.world > 1:
            dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=self.group)
        return [float(v) for v in buf.tolist()]  # host sync: only when a post-step check vetoes

    # -- reading back (host syncs: log steps, vetoes, flush only) ---------------------
    def snapshot(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """Sticky local and global flags and first steps (one host sync)."""
        # Trips written after the last reduce (post-step checks) are included locally;
        # the caller de-duplicates when the next reduce folds them in again.
        local = torch.maximum(self.local, self.new)
        first = torch.where(
            (self.local_first < 0) & (self.new > 0), self.new_step, self.local_first
        )
        packed = torch.stack([local, first, self.glob, self.glob_first]).tolist()
        return packed[0], packed[1], packed[2], packed[3]

    def clear(self) -> None:
        self.local.zero_()
        self.local_first.fill_(-1.0)
        self.glob.zero_()
        self.glob_first.fill_(-1.0)
