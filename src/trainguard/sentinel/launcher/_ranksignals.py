"""Who sent that signal? Sender attribution inside a rank (``sigwaitinfo`` semantics).

A Python signal handler is not told who sent the signal; ``siginfo`` is. The
only portable way to read it from Python is to block the signals and accept
them with :func:`signal.sigwaitinfo` in a dedicated thread. So
:meth:`SignalAttributor.install` (run on the main thread, before other threads
exist, which inherit the mask) blocks :data:`ATTRIBUTED`; the waiter thread
records each signal with its sender's pid, uid and command line, and then
re-delivers it to the process so the job sees exactly what it would have seen
without trainguard: the default action still kills with the same signal, a
Python handler still runs on the main thread.

Side effects, each handled:

* forked children (DataLoader workers) inherit the blocked mask: an
  ``os.register_at_fork`` hook unblocks it in the child;
* exec'd children (``subprocess``, ``os.system``, ``os.posix_spawn``) inherit it
  too: the audit check calls :meth:`SignalAttributor.unblock_for_spawn` on those
  events and the sentinel re-blocks at its next step (:meth:`reblock`);
  children started by ``multiprocessing``'s spawn/forkserver raise no audit
  event and keep the mask (documented; ``TRAINGUARD_RANK_SIGNALS=0`` disables
  attribution).

SIGKILL and SIGSTOP cannot be blocked or caught; the supervisor reports them
from wait statuses and /proc instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainguard.sentinel.launcher._jobdir import ENV_SUPERVISOR_PID, JobDir
from trainguard.sentinel.launcher._procinfo import describe_pid, signal_name

__all__ = [
    "ATTRIBUTED",
    "SignalAttributor",
    "SignalRecord",
    "classify_sender",
    "current",
    "install",
    "is_internal",
]

#: Catchable signals a saboteur would send to stop or disturb a rank. SIGCONT is
#: included because it names who resumed a rank stopped by an uncatchable SIGSTOP.
ATTRIBUTED: tuple[signal.Signals, ...] = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
)

#: Linux ``si_code`` values (not exposed by the signal module).
SI_CODES: Mapping[int, str] = {
    0: "SI_USER",  # kill(2)
    0x80: "SI_KERNEL",  # the kernel: a terminal's Ctrl-C, a hang-up
    -1: "SI_QUEUE",  # sigqueue(3)
    -2: "SI_TIMER",
    -3: "SI_MESGQ",
    -4: "SI_ASYNCIO",
    -5: "SI_SIGIO",
    -6: "SI_TKILL",  # tgkill(2): a thread-directed signal
}

_INTERNAL = threading.local()


def is_internal() -> bool:
    """True while this thread re-delivers a signal it attributed (the audit check skips it)."""
    return bool(getattr(_INTERNAL, "active", False))


def classify_sender(
    pid: int,
    code: int,
    *,
    own_pid: int,
    launcher_pids: Collection[int],
    peer_pids: Collection[int],
) -> str:
    """Where a signal came from: ``kernel``, ``self``, ``launcher``, ``peer-rank`` or ``external``.

    ``launcher`` (the torchrun agent or the trainguard supervisor) is the only
    origin expected to stop a rank; ``external`` is what an alarm is about.
    """
    if pid == 0 or code == 0x80:
        return "kernel"
    if pid == own_pid:
        return "self"
    if pid in launcher_pids:
        return "launcher"
    if pid in peer_pids:
        return "peer-rank"
    return "external"


@dataclass(frozen=True)
class SignalRecord:
    """One attributed signal: which, from whom, classified."""

    signal: int
    sender_pid: int
    sender_uid: int
    code: int
    origin: str
    time: float
    sender: Mapping[str, Any] = field(default_factory=dict)

    @property
    def signal_name(self) -> str:
        return signal_name(self.signal)

    def to_fields(self) -> dict[str, Any]:
        """JSON-compatible facts for an event or an alarm's evidence."""
        return {
            "signal": self.signal,
            "signal_name": self.signal_name,
            "sender_pid": self.sender_pid,
            "sender_uid": self.sender_uid,
            "si_code": SI_CODES.get(self.code, str(self.code)),
            "origin": self.origin,
            "sender": dict(self.sender),
        }


OnRecord = Callable[[SignalRecord], None]


def _launcher_pids() -> set[int]:
    pids = set()
    supervisor = os.environ.get(ENV_SUPERVISOR_PID, "")
    if supervisor.isdigit():
        pids.add(int(supervisor))
    # Under torchrun the elastic agent, our parent, stops workers on purpose.
    if os.environ.get("TORCHELASTIC_RUN_ID") or supervisor.isdigit():
        pids.add(os.getppid())
    return pids


class SignalAttributor:
    """Blocks :data:`ATTRIBUTED` signals and accepts them on a waiter thread."""

    def __init__(
        self,
        *,
        rank: int,
        job: JobDir | None = None,
        on_record: OnRecord | None = None,
        signals: tuple[signal.Signals, ...] = ATTRIBUTED,
    ) -> None:
        self.rank = rank
        self.job = job
        self.on_record = on_record
        self.signals = signals
        self.pid = os.getpid()
        #: Every signal attributed so far, oldest first.
        self.records: list[SignalRecord] = []
        self._unblocked: set[int] = set()
        self._thread = threading.Thread(target=self._loop, name="trainguard-signals", daemon=True)

    # -- installation ------------------------------------------------------
    def install(self) -> SignalAttributor:
        """Block the signals in the calling (main) thread and start the waiter."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal attribution must be installed from the main thread")
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        self._thread.start()
        return self

    def _after_fork_in_child(self) -> None:
        # The waiter thread does not exist in a forked child: give it the
        # ordinary signal semantics back.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)

    def unblock_for_spawn(self) -> None:
        """Unblock in this thread so an exec'd child does not inherit the mask."""
        ident = threading.get_ident()
        if ident == self._thread.ident or ident in self._unblocked:
            return
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)
        self._unblocked.add(ident)

    def reblock(self) -> None:
        """Re-block after :meth:`unblock_for_spawn` (cheap when nothing is pending)."""
        if self._unblocked and threading.get_ident() in self._unblocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
            self._unblocked.discard(threading.get_ident())

    # -- the waiter ----------------------------------------------------------
    def _loop(self) -> None:
        while True:
            info = signal.sigwaitinfo(self.signals)
            try:
                self._attribute(info.si_signo, info.si_pid, info.si_uid, info.si_code)
            finally:
                self._redeliver(info.si_signo)

    def _attribute(self, signo: int, pid: int, uid: int, code: int) -> SignalRecord:
        peers = set()
        if self.job is not None:
            peers = {b.pid for b in self.job.read_heartbeats().values() if b.pid != self.pid}
        origin = classify_sender(
            pid, code, own_pid=self.pid, launcher_pids=_launcher_pids(), peer_pids=peers
        )
        record = SignalRecord(signo, pid, uid, code, origin, time.time(), describe_pid(pid))
        self.records.append(record)
        if self.job is not None:
            with contextlib.suppress(OSError):
                self.job.append_event(
                    "signal-received", rank=self.rank, pid=self.pid, **record.to_fields()
                )
        if self.on_record is not None:
            # A failing reporter must not swallow the signal.
            with contextlib.suppress(Exception):
                self.on_record(record)
        return record

    def _redeliver(self, signo: int) -> None:
        """Give the signal its normal effect: default action or the job's handler."""
        handler = signal.getsignal(signo)
        if handler == signal.SIG_IGN:
            return
        if signo == signal.SIGCONT and handler in (signal.SIG_DFL, None):
            return  # the kernel already resumed the process; nothing else to do
        _INTERNAL.active = True
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signo])
            # Unblocked in this thread only, so the signal lands here before
            # kill() returns: the default action ends the process with this very
            # signal, and a Python handler is scheduled on the main thread.
            os.kill(os.getpid(), signo)
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signo])
            _INTERNAL.active = False


_CURRENT: SignalAttributor | None = None


def current() -> SignalAttributor | None:
    """The attributor installed in this process, if any (``None`` in forked children)."""
    attributor = _CURRENT
    return attributor if attributor is not None and attributor.pid == os.getpid() else None


def install(
    *, rank: int, job: JobDir | None = None, on_record: OnRecord | None = None
) -> SignalAttributor:
    """Install attribution once per process (later calls return the first)."""
    global _CURRENT
    existing = current()
    if existing is not None:
        return existing
    _CURRENT = SignalAttributor(rank=rank, job=job, on_record=on_record).install()
    return _CURRENT
