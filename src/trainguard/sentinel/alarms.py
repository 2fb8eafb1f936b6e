"""Alarms: what a check says when it trips, and where that goes.

An :class:`Alarm` is a structured event (check, rule, rank, host, step, message,
evidence, severity). The :class:`AlarmRouter` sends each one to

* a local **append-only spool**: one JSON line per alarm in
  ``SPOOL/alarms-rank{R}-{pid}.jsonl``, written with a single ``write`` on an
  ``O_APPEND`` descriptor (a reader never sees half a line, concurrent writers never
  interleave within a line). With ``fsync="always"`` (the default) the line is
  fsync'd before the alarm is handed to anyone else, so an alarm that reached
  ``on_alarm``, the console or the ledger is on disk: a job killed right after an
  alarm loses nothing; a power failure loses at most the line being written.
  Alarms are rare, so the fsync is off the hot path.
* the **console** (the ``trainguard.sentinel`` logger), rate-limited: a burst of
  ``console_burst`` lines, then one per ``console_interval_s``; suppressed lines are
  counted and the count is printed with the next line that gets through.
* an optional **ledger sink** (:class:`LedgerSink`): see :func:`default_ledger_sink`.
* the user's ``on_alarm`` callback.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trainguard.findings import Finding, Severity

__all__ = [
    "Alarm",
    "AlarmRouter",
    "AlarmSpool",
    "ConsoleLimiter",
    "LedgerSink",
    "RunLedgerSink",
    "alert_of",
    "default_ledger_sink",
    "ledger_evidence",
]

log = logging.getLogger("trainguard.sentinel")


def _jsonable(value: Any) -> Any:
    """Evidence is JSON data; anything else is reduced to its ``repr`` (never pickled)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return repr(value)


@dataclass(frozen=True)
class Alarm:
    """One detection by one check.

    Attributes:
        check: the check's name (``"weights"``, ``"updates"``...).
        rule: the :class:`~trainguard.findings.Rule` id behind it.
        rank: the rank the problem was detected on (for a peer's alarm, that peer).
        host: that rank's host name.
        step: the optimizer step at which it was detected (0 before the first step).
        message: one line for people.
        evidence: JSON facts: tensor names, fingerprints, scores, stacks, file:line...
        severity: how bad it is.
        action: what the sentinel did: ``"warn"``, ``"veto"`` or ``"halt"``.
        reporter: the rank that wrote this record (differs from ``rank`` for peers).
        time: wall-clock time of the record (seconds since the epoch).
    """

    check: str
    rule: str
    rank: int
    host: str
    step: int
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity = Severity.HIGH
    action: str = "warn"
    reporter: int = 0
    time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.check or not self.rule:
            raise ValueError("an alarm needs a check name and a rule id")
        if self.rank < 0 or self.step < 0:
            raise ValueError(f"alarm rank/step must be >= 0, got {self.rank}/{self.step}")
        object.__setattr__(self, "evidence", _jsonable(dict(self.evidence)))
        object.__setattr__(self, "severity", Severity(self.severity))

    @property
    def is_peer(self) -> bool:
        """True when this rank only relays another rank's detection."""
        return self.rank != self.reporter

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "rule": self.rule,
            "rank": self.rank,
            "host": self.host,
            "step": self.step,
            "message": self.message,
            "evidence": dict(self.evidence),
            "severity": self.severity.label,
            "action": self.action,
            "reporter": self.reporter,
            "time": self.time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alarm:
        """Rebuild (and validate) an alarm from a spool line or ledger record."""
        try:
            return cls(
                check=str(data["check"]),
                rule=str(data["rule"]),
                rank=int(data["rank"]),
                host=str(data["host"]),
                step=int(data["step"]),
                message=str(data["message"]),
                evidence=dict(data.get("evidence") or {}),
                severity=Severity.parse(str(data["severity"])),
                action=str(data.get("action", "warn")),
                reporter=int(data.get("reporter", data["rank"])),
                time=float(data.get("time", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed alarm record: {exc}") from exc

    def to_finding(self) -> Finding:
        """The same detection in trainguard's one vocabulary (for reports and SARIF)."""
        subject = f"rank {self.rank} ({self.host}) step {self.step}"
        evidence = dict(self.evidence)
        evidence.update(check=self.check, action=self.action, reporter=self.reporter)
        return Finding(self.rule, self.severity, subject, self.message, evidence)

    def line(self) -> str:
        """The console form."""
        where = f"rank {self.rank}@{self.host} step {self.step}"
        peer = f" (reported by rank {self.reporter})" if self.is_peer else ""
        return f"[trainguard {self.severity.label}] {self.check}: {self.message} [{where}{peer}; {self.action}]"


class AlarmSpool:
    """Append-only JSONL spool for one process (see the module docstring for the policy)."""

    def __init__(self, directory: str | os.PathLike[str], *, rank: int, fsync: bool = True) -> None:
        self.path = Path(directory) / f"alarms-rank{rank}-{os.getpid()}.jsonl"
        self.fsync = fsync
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 0o600: the spool names tensors and code paths of a private job.
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        return self._fd

    def append(self, alarm: Alarm) -> None:
        data = (json.dumps(alarm.to_dict(), sort_keys=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = self._open()
            os.write(fd, data)  # one write on O_APPEND: never interleaved, never half-visible
            if self.fsync:
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    @staticmethod
    def read(path: str | os.PathLike[str]) -> list[Alarm]:
        """Read a spool back; malformed lines (a torn last line) are skipped."""
        alarms = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    alarms.append(Alarm.from_dict(json.loads(line)))
                except (ValueError, TypeError):
                    continue
        return alarms


class ConsoleLimiter:
    """Token bucket for console lines: ``burst`` at once, then one per ``interval`` seconds."""

    def __init__(
        self, burst: int, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if self.interval > 0:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) / self.interval)
        else:
            self._tokens = float(max(self.burst, 1))
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False


class LedgerSink(Protocol):
    """Where alarms (and log-step metrics) go in the ledger; any failure is the sink's to
    report."""

    def append_alarm(self, record: Mapping[str, Any]) -> None: ...

    def append_metrics(self, step: int, rank: int, values: Mapping[str, float]) -> None: ...


#: Integers a ledger entry may hold (canonical JSON: exact in every JSON reader).
_LEDGER_INT = 2**53


def ledger_evidence(value: Any, *, depth: int = 0) -> Any:
    """``value`` in the ledger's canonical-JSON domain: floats become their exact
    ``repr`` (``"nan"`` and ``"inf"`` included), integers beyond +-2**53 and anything
    that is not JSON become strings, keys become ASCII strings (``\\u`` escapes)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -_LEDGER_INT < value < _LEDGER_INT else str(value)
    if isinstance(value, float):
        return repr(value)
    if depth >= 16:
        return repr(value)[:256]
    if isinstance(value, Mapping):
        return {
            str(k).encode("ascii", "backslashreplace").decode("ascii"): ledger_evidence(
                v, depth=depth + 1
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [ledger_evidence(v, depth=depth + 1) for v in value]
    return str(value)


def alert_of(run_id: str, record: Mapping[str, Any]) -> Any:
    """The :class:`trainguard.ledger.Alert` of an alarm (as :meth:`Alarm.to_dict` gives it)."""
    from trainguard.ledger import Alert

    evidence = dict(record.get("evidence") or {})
    evidence.update(
        check=record["check"],
        rank=record["rank"],
        host=record["host"],
        action=record["action"],
        # Who wrote it: a rank relaying a peer's detection names the peer in ``rank``.
        reporter=record.get("reporter", record["rank"]),
    )
    return Alert(
        run_id=run_id,
        rule=str(record["rule"]),
        severity=str(record["severity"]),
        message=str(record["message"]),
        at=int(record["time"]),
        step=int(record["step"]) if int(record["step"]) >= 0 else None,
        evidence=ledger_evidence(evidence),
    )


class RunLedgerSink:
    """Appends alarms as :class:`trainguard.ledger.Alert` records of the recorded run."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder

    def append_alarm(self, record: Mapping[str, Any]) -> None:
        self.recorder.ledger.append([alert_of(self.recorder.run.run_id, record)])

    def append_metrics(self, step: int, rank: int, values: Mapping[str, float]) -> None:
        """One :class:`trainguard.ledger.StepMetrics` record of this rank at a log step."""
        from trainguard.ledger import StepMetrics

        record = StepMetrics.of(self.recorder.run.run_id, step, rank, int(time.time()), values)
        self.recorder.ledger.append([record])


def default_ledger_sink() -> LedgerSink | None:
    """Adapter point to the trainguard ledger: the one place alarms enter it.

    When ``protect()`` runs inside a ledger run recording (``with
    trainguard.ledger.RunRecorder.start(...)``), every alarm is appended to that
    ledger as an ``Alert`` of the run (tamper-evident, and an indicator for blast
    radius). Otherwise ``None``: alarms go to the spool, console and ``on_alarm``.
    """
    try:
        from trainguard.ledger.capture import current
    except ImportError:  # a trainguard build without the ledger
        return None
    recorder = current()
    return RunLedgerSink(recorder) if recorder is not None else None


class AlarmRouter:
    """Fans an alarm out to spool, console, ledger and callback, in that order."""

    def __init__(
        self,
        spool: AlarmSpool | None,
        *,
        console: ConsoleLimiter | None,
        ledger: LedgerSink | None = None,
        on_alarm: Callable[[Alarm], object] | None = None,
    ) -> None:
        self.spool = spool
        self.console = console
        self.ledger = ledger
        self.on_alarm = on_alarm
        self.host = socket.gethostname()

    def emit(self, alarm: Alarm) -> None:
        if self.spool is not None:
            try:
                self.spool.append(alarm)
            except OSError as exc:
                log.error("trainguard: could not write alarm spool %s: %s", self.spool.path, exc)
        if self.console is not None and self.console.allow():
            suppressed = self.console.suppressed
            self.console.suppressed = 0
            more = f" (+{suppressed} alarm lines suppressed)" if suppressed else ""
            log.warning("%s%s", alarm.line(), more)
        if self.ledger is not None:
            try:
                self.ledger.append_alarm(alarm.to_dict())
            except Exception as exc:  # the ledger's failure must not hide the alarm
                log.error("trainguard: could not append alarm to the ledger: %s", exc)
        if self.on_alarm is not None:
            self.on_alarm(alarm)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
