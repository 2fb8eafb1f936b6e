"""What the supervisor knows about each rank, and the alarms that follow from it.

:class:`RankTracker` is fed events (``events.jsonl``), heartbeats and the
supervisor's own wait statuses, and returns alarms. It holds no process and no
file: the supervisor does I/O, this decides, so every transition (died, killed
by whom, stopped, silent, resumed, vanished) is tested by feeding it records.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainguard.findings import Rule, Severity
from trainguard.sentinel.alarms import Alarm
from trainguard.sentinel.launcher._jobdir import Event, Heartbeat
from trainguard.sentinel.launcher._procinfo import STATE_WORDS, signal_name
from trainguard.sentinel.launcher._rules import (
    RANK_FAILED,
    RANK_KILLED,
    RANK_RESUMED,
    RANK_SILENT,
    RANK_STOPPED,
    RANK_VANISHED,
    SIGNALLED,
    STEP_STALLED,
)

__all__ = ["RankState", "RankTracker"]

_EXPECTED_ORIGINS = ("launcher", "kernel")


@dataclass
class RankState:
    """One rank (one incarnation: a restart resets it)."""

    rank: int
    pid: int | None = None
    host: str = "?"
    seq: int = -1
    seen_at: float = 0.0
    step: int | None = None
    step_at: float = 0.0
    silent: bool = False
    stalled: bool = False
    stopped: bool = False
    exited: bool = False
    exiting: bool = False
    signals: list[dict[str, Any]] = field(default_factory=list)


class RankTracker:
    """Turns observations into alarms (see the module docstring).

    Args:
        host: the supervisor's host (ranks without a heartbeat yet are placed there).
        heartbeat_timeout: seconds without a heartbeat before a rank is silent.
        stall_timeout: seconds without a new step before a beating rank is stalled (0: off).
        proc_state: ``pid -> one-letter /proc state or None`` (injected for tests).
    """

    def __init__(
        self,
        host: str,
        *,
        heartbeat_timeout: float,
        stall_timeout: float = 0.0,
        proc_state: Callable[[int], str | None],
    ) -> None:
        self.host = host
        self.heartbeat_timeout = heartbeat_timeout
        self.stall_timeout = stall_timeout
        self.proc_state = proc_state
        self.ranks: dict[int, RankState] = {}
        #: Kills seen by ranks' audit hooks: target pid -> the event's facts.
        self.kills: dict[int, dict[str, Any]] = {}
        #: Set when the job is being shut down on purpose (canary done, forwarded signal).
        self.shutting_down = False
        #: The first rank that died abnormally: (rank, time); later failures are collateral.
        self.first_death: tuple[int, float] | None = None

    # -- helpers -------------------------------------------------------------------
    def _state(self, rank: int) -> RankState:
        if rank not in self.ranks:
            self.ranks[rank] = RankState(rank, host=self.host)
        return self.ranks[rank]

    def _alarm(
        self,
        rule: Rule,
        state: RankState,
        message: str,
        *,
        severity: Severity | None = None,
        **evidence: Any,
    ) -> Alarm:
        return Alarm(
            check="kills",
            rule=rule.id,
            rank=state.rank,
            host=state.host,
            step=state.step or 0,
            message=message,
            evidence={"pid": state.pid, **evidence},
            severity=rule.severity if severity is None else severity,
            reporter=state.rank,
        )

    @staticmethod
    def _sender(record: dict[str, Any]) -> str:
        sender = record.get("sender") or {}
        who = f"pid {record.get('sender_pid')} (uid {record.get('sender_uid')}"
        if sender.get("user"):
            who += f" {sender['user']}"
        who += ")"
        if sender.get("cmdline"):
            who += f" `{sender['cmdline'][:120]}`"
        elif sender.get("alive") is False:
            who += " (already exited)"
        return who

    # -- events ----------------------------------------------------------------------
    def on_event(self, event: Event, now: float) -> list[Alarm]:
        """One line of ``events.jsonl``."""
        kind = event.kind
        if kind == "kill-sent":
            self.kills[event.int_field("target_pid")] = dict(event.fields)
            return []
        state = self._state(event.int_field("rank"))
        pid = event.int_field("pid")
        if kind == "worker-started":
            fresh = RankState(state.rank, pid=pid, host=state.host, seen_at=now, step_at=now)
            self.ranks[state.rank] = fresh
            return []
        if state.pid is None:
            state.pid = pid
        if kind == "rank-exiting":
            state.exiting = True
            return []
        if kind == "worker-exited":
            return self.on_exit(state.rank, pid, event.int_field("exitcode"), now)
        if kind == "worker-stopped":
            return self._stopped(state, event.int_field("signal"), "its parent saw a stop status")
        if kind == "worker-continued":
            state.stopped = False
            return []
        # signal-received
        record = dict(event.fields)
        state.signals.append(record)
        signo = event.int_field("signal")
        origin = record.get("origin")
        if signo == signal.SIGCONT:
            if state.stopped or state.silent or origin not in _EXPECTED_ORIGINS:
                was = "stopped" if state.stopped or state.silent else "running"
                state.stopped = state.silent = False
                return [
                    self._alarm(
                        RANK_RESUMED,
                        state,
                        f"rank {state.rank} ({was}) was resumed by SIGCONT from {self._sender(record)}"
                        + ("; that process most likely stopped it too" if was == "stopped" else ""),
                        **record,
                    )
                ]
            return []
        if origin in _EXPECTED_ORIGINS:
            return []
        return [
            self._alarm(
                SIGNALLED,
                state,
                f"rank {state.rank} received {signal_name(signo)} from {origin} {self._sender(record)}",
                **record,
            )
        ]

    def register(self, rank: int, pid: int, now: float) -> None:
        """A rank the supervisor started itself (``python`` mode: its child is rank 0)."""
        self.ranks[rank] = RankState(rank, pid=pid, host=self.host, seen_at=now, step_at=now)

    def on_stop(self, rank: int, signo: int | None, how: str) -> list[Alarm]:
        """A wait status said the rank stopped (``signo``: the stop signal)."""
        return self._stopped(self._state(rank), signo, how)

    def on_continue(self, rank: int) -> None:
        self._state(rank).stopped = False

    def _stopped(self, state: RankState, signo: int | None, how: str) -> list[Alarm]:
        if state.stopped:
            return []
        state.stopped = True
        name = signal_name(signo) if signo else "a stop signal"
        sender = (
            "SIGSTOP cannot be caught, so the sender is unknown (the SIGCONT that resumes it is attributed)"
            if signo in (None, signal.SIGSTOP)
            else "the stop signal was not attributed"
        )
        return [
            self._alarm(
                RANK_STOPPED,
                state,
                f"rank {state.rank} (pid {state.pid}) was stopped by {name}; {sender}",
                signal=signo,
                signal_name=name,
                observed=how,
            )
        ]

    def on_exit(self, rank: int, pid: int, exitcode: int, now: float = 0.0) -> list[Alarm]:
        """A rank's exit status (negative: killed by that signal)."""
        state = self._state(rank)
        if state.exited and state.pid == pid:
            return []
        state.exited, state.pid = True, pid
        if exitcode == 0:
            return []
        first = self.first_death
        if first is None:
            self.first_death = (rank, now)
        if exitcode > 0:
            if self.shutting_down:
                return []
            if first is not None and first[0] != rank:
                # Peers of a dead rank fail in their next collective: a consequence.
                return [
                    self._alarm(
                        RANK_FAILED,
                        state,
                        f"rank {rank} (pid {pid}) exited with status {exitcode} after rank "
                        f"{first[0]} died (most likely a consequence)",
                        severity=Severity.LOW,
                        exitcode=exitcode,
                        after_rank=first[0],
                    )
                ]
            return [
                self._alarm(
                    RANK_FAILED,
                    state,
                    f"rank {rank} (pid {pid}) exited with status {exitcode}",
                    exitcode=exitcode,
                )
            ]
        signo = -exitcode
        name = signal_name(signo)
        caught = [r for r in state.signals if r.get("signal") == signo]
        if caught:
            record = caught[-1]
            if record.get("origin") in _EXPECTED_ORIGINS:
                return []  # the launcher stopped it (shutdown after another failure) or Ctrl-C
            return [
                self._alarm(
                    RANK_KILLED,
                    state,
                    f"rank {rank} (pid {pid}) was killed by {name} sent by {record.get('origin')} "
                    f"{self._sender(record)}",
                    signal=signo,
                    signal_name=name,
                    **{k: v for k, v in record.items() if k not in ("signal", "signal_name")},
                )
            ]
        if self.shutting_down and signo == signal.SIGTERM:
            return []
        evidence: dict[str, Any] = {"signal": signo, "signal_name": name}
        witness = self.kills.get(pid)
        if witness is not None:
            evidence["killer"] = witness
            why = f"sent by rank {witness.get('rank')} (pid {witness.get('pid')}), seen by its audit hook"
        elif signo == signal.SIGKILL:
            why = (
                "SIGKILL cannot be caught, so the sender is unknown (a user's kill -9, another "
                "process of the same user or root, or the kernel's out-of-memory killer)"
            )
        else:
            why = "the signal was not attributed (in-rank signal attribution was off)"
        return [
            self._alarm(
                RANK_KILLED,
                state,
                f"rank {rank} (pid {pid}) was killed by {name}; {why}",
                **evidence,
            )
        ]

    # -- heartbeats and time -------------------------------------------------------------
    def on_heartbeat(self, beat: Heartbeat, now: float) -> None:
        state = self._state(beat.rank)
        if state.exited and state.pid != beat.pid:
            state = self.ranks[beat.rank] = RankState(beat.rank, seen_at=now, step_at=now)
        state.host = beat.host
        state.pid = beat.pid
        if beat.seq != state.seq:
            state.seq, state.seen_at = beat.seq, now
            state.silent = False
        if beat.step != state.step:
            state.step, state.step_at, state.stalled = beat.step, now, False

    def check_timeouts(self, now: float) -> list[Alarm]:
        """Silent, stopped (state T), vanished and stalled ranks."""
        alarms: list[Alarm] = []
        for state in self.ranks.values():
            if state.exited or state.exiting or state.pid is None or state.seq < 0:
                continue
            proc = self.proc_state(state.pid)
            if proc is None and now - state.seen_at > self.heartbeat_timeout:
                # Gone, and nobody reported its exit: killed without a witness.
                state.exited = True
                alarms.append(
                    self._alarm(
                        RANK_VANISHED,
                        state,
                        f"rank {state.rank} (pid {state.pid}) disappeared without an exit status; "
                        "most likely killed with SIGKILL",
                        last_heartbeat_s=round(now - state.seen_at, 3),
                        killer=self.kills.get(state.pid),
                    )
                )
                continue
            if proc in ("T", "t") and not state.stopped:
                alarms.extend(self._stopped(state, None, f"process state {proc} in /proc"))
            if (
                now - state.seen_at > self.heartbeat_timeout
                and not state.silent
                and not state.stopped
            ):
                state.silent = True
                words = STATE_WORDS.get(proc or "", proc or "unknown")
                alarms.append(
                    self._alarm(
                        RANK_SILENT,
                        state,
                        f"rank {state.rank} (pid {state.pid}) sent no heartbeat for "
                        f"{now - state.seen_at:.1f} s; its process is {words}",
                        proc_state=proc,
                        silent_s=round(now - state.seen_at, 3),
                    )
                )
            if (
                self.stall_timeout > 0
                and state.step is not None
                and not state.silent
                and not state.stalled
                and now - state.step_at > self.stall_timeout
            ):
                state.stalled = True
                alarms.append(
                    self._alarm(
                        STEP_STALLED,
                        state,
                        f"rank {state.rank} is alive but reported no new step for "
                        f"{now - state.step_at:.1f} s (last step {state.step})",
                        stalled_s=round(now - state.step_at, 3),
                    )
                )
        return alarms
