"""Check 8: in-process defences through a Python audit hook.

One process-wide audit hook (:mod:`._audithook`; hooks cannot be removed, so it
is cheap when idle and guarded against re-entry) feeds an
:class:`~._auditmonitor.AuditMonitor` that records:

* ``pickle.find_class`` of a global outside the allowlist (the scanner's pickle
  policy, so runtime and static verdicts agree), in a checkpoint load or in
  inter-process traffic (where torch's own transport globals are expected);
* process spawning, always logged; an alarm, and **blocked** (``AuditVeto`` is
  raised into the loader) when it happens inside a load;
* ``compile``/``exec`` of strings, ``marshal.loads``, ``ctypes.dlopen`` and
  network connects inside a load (blocked too, except connects);
* ``os.kill``/``os.killpg``/``signal.pthread_kill`` aimed at the job's own
  processes (its ranks, its torchrun agent, the ``trainguard run`` supervisor).

Options: ``allow`` (extra allowed globals: ``"pkg.mod.Name"`` or a prefix ending
in ``.``), ``block_in_load`` (``True``), ``alarm_on_spawn`` (``False``: spawning
outside a load is only logged in :attr:`AuditCheck.log`), ``rank_signals``
(``False``: install in-rank signal attribution from ``protect()``; the launcher
installs it earlier and better, before any thread exists).

Alarms found before the first training step are held and raised at the first
hook. Alarms raised in forked children (DataLoader workers) are not collected.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from trainguard.errors import ConfigError
from trainguard.findings import Rule, Severity
from trainguard.sentinel.checks import _audithook
from trainguard.sentinel.checks._auditmonitor import MONITORED_EVENTS, AuditMonitor, AuditRecord
from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip
from trainguard.sentinel.config import CheckConfig

__all__ = [
    "CHECK",
    "CODE_IN_LOAD",
    "KILL_OWN_RANK",
    "PICKLE_GLOBAL",
    "SPAWN",
    "SPAWN_IN_LOAD",
    "AuditCheck",
]

PICKLE_GLOBAL = Rule(
    "sentinel.audit.pickle-global",
    Severity.HIGH,
    "Unpickling resolved a global outside the allowlist",
    "While the job ran, the unpickler imported a global that a weights-only load rejects and "
    "that no data-only allowlist covers. Malicious checkpoints run their payload through such "
    "globals (os.system, builtins.exec, runpy...). The evidence names the global and the load.",
)
SPAWN_IN_LOAD = Rule(
    "sentinel.audit.spawn-in-load",
    Severity.CRITICAL,
    "Loading an artifact started a process",
    "A checkpoint or pickle load started a process (subprocess, os.system, exec, posix_spawn). "
    "No legitimate load does this: the artifact carries a payload. trainguard blocked the call "
    "unless block_in_load is off.",
)
CODE_IN_LOAD = Rule(
    "sentinel.audit.code-in-load",
    Severity.CRITICAL,
    "Loading an artifact compiled or executed code",
    "A load compiled or executed code from a string, unmarshalled code, loaded a native library "
    "or opened a network connection. Data loads do none of these.",
)
SPAWN = Rule(
    "sentinel.audit.spawn",
    Severity.LOW,
    "The training process started another process",
    "Reported only with alarm_on_spawn: the training process started a program (the command is "
    "in the evidence). Usually benign (compilers, data tools); an attacker uses the same calls.",
)
KILL_OWN_RANK = Rule(
    "sentinel.audit.kill-own-rank",
    Severity.HIGH,
    "Code in the job sent a signal to one of the job's own processes",
    "os.kill/killpg aimed at a rank, the torchrun agent or the trainguard supervisor of this same "
    "job, from inside the training process. Killing peers is how the 2024 sabotage stopped "
    "multi-node jobs; the evidence has the stack of the call.",
)

_RULES = {r.id: r for r in (PICKLE_GLOBAL, SPAWN_IN_LOAD, CODE_IN_LOAD, SPAWN, KILL_OWN_RANK)}


def _rule_for(record: AuditRecord) -> Rule:
    if record.kind == "find-class":
        return PICKLE_GLOBAL
    if record.kind == "kill":
        return KILL_OWN_RANK
    if record.kind == "spawn":
        return SPAWN_IN_LOAD if record.evidence.get("load_frame") else SPAWN
    return CODE_IN_LOAD


class AuditCheck(Check):
    """See the module docstring."""

    name: ClassVar[str] = "audit"
    rule: ClassVar[Rule] = PICKLE_GLOBAL
    defaults: ClassVar[CheckConfig] = CheckConfig(
        options={
            "allow": (),
            "block_in_load": True,
            "alarm_on_spawn": False,
            "rank_signals": False,
        }
    )

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        super().__init__(ctx, config)
        allow = self.options["allow"]
        if isinstance(allow, str):
            allow = (allow,)
        if not isinstance(allow, tuple):
            raise ConfigError("audit: 'allow' must be a list of global names or prefixes")
        self._lock = threading.Lock()
        self._state: StepState | None = None
        self._pending: list[AuditRecord] = []
        self.monitor = AuditMonitor(
            self._report,
            allow=allow,
            block_in_load=bool(self.options["block_in_load"]),
            alarm_on_spawn=bool(self.options["alarm_on_spawn"]),
        )
        self._subscription = _audithook.subscribe(MONITORED_EVENTS, self.monitor)
        if self.options["rank_signals"]:
            self._install_rank_signals()

    @property
    def log(self) -> list[AuditRecord]:
        """Every audited event kept (alarms and logged spawns), oldest first."""
        return list(self.monitor.log)

    def _install_rank_signals(self) -> None:
        from trainguard.sentinel.alarms import Alarm, AlarmSpool
        from trainguard.sentinel.launcher import _ranksignals
        from trainguard.sentinel.launcher._jobdir import JobDir
        from trainguard.sentinel.launcher._rules import SIGNALLED

        spool = AlarmSpool(self.ctx.config.resolved_spool_dir(), rank=self.ctx.rank)
        ctx = self.ctx

        def on_record(record: _ranksignals.SignalRecord) -> None:
            if record.origin in ("launcher", "kernel"):
                return
            # Written at once, fsync'd: the signal may end this process before
            # the next read-back would report it.
            spool.append(
                Alarm(
                    check="audit",
                    rule=SIGNALLED.id,
                    rank=ctx.rank,
                    host=ctx.host,
                    step=self._state.step if self._state is not None else 0,
                    message=f"{record.signal_name} from pid {record.sender_pid} "
                    f"(uid {record.sender_uid}, {record.origin})",
                    evidence=record.to_fields(),
                    severity=SIGNALLED.severity,
                    reporter=ctx.rank,
                )
            )

        if threading.current_thread() is threading.main_thread():
            _ranksignals.install(rank=ctx.rank, job=JobDir.from_env(), on_record=on_record)

    # -- reporting (any thread, possibly inside the audit hook) ------------------------
    def _report(self, record: AuditRecord) -> None:
        if record.kind == "kill":
            self._tell_launcher(record)
        with self._lock:
            state = self._state
            if state is None:
                self._pending.append(record)
                return
        self._trip(state, record)

    def _tell_launcher(self, record: AuditRecord) -> None:
        """Name the killer to the supervisor now: an uncatchable SIGKILL has no other witness."""
        import os

        from trainguard.sentinel.launcher._jobdir import JobDir

        job = JobDir.from_env()
        if job is None:
            return
        with contextlib.suppress(OSError, KeyError, ValueError):
            job.append_event(
                "kill-sent",
                rank=self.ctx.rank,
                pid=os.getpid(),
                target_pid=int(record.evidence["target_pid"]),
                signal=int(record.evidence["signal"]),
                stack=record.evidence.get("stack", []),
            )

    def _trip(self, state: StepState, record: AuditRecord) -> None:
        state.trip_host(
            self,
            record.message,
            rule_id=_rule_for(record).id,
            severity=record.severity.label,
            event=record.event,
            blocked=record.blocked,
            **record.evidence,
        )

    def _attach(self, state: StepState) -> None:
        from trainguard.sentinel.launcher import _ranksignals

        attributor = _ranksignals.current()
        if attributor is not None:
            attributor.reblock()  # after a spawn unblocked this thread (see _ranksignals)
        if self._state is state:
            return
        with self._lock:
            self._state, pending = state, self._pending
            self._pending = []
        for record in pending:
            self._trip(state, record)

    def on_forward(self, state: StepState) -> None:
        self._attach(state)

    def before_step(self, state: StepState) -> None:
        self._attach(state)

    def describe(self, trip: Trip) -> Sequence[Detection]:
        out = []
        for event in trip.events:
            evidence: dict[str, Any] = dict(event.evidence)
            rule = _RULES.get(str(evidence.pop("rule_id", "")), PICKLE_GLOBAL)
            severity = Severity.parse(str(evidence.pop("severity", rule.severity.label)))
            out.append(
                Detection(event.message, evidence, step=event.step, severity=severity, rule=rule)
            )
        return out

    def close(self) -> None:
        self._subscription.cancel()


CHECK = AuditCheck
