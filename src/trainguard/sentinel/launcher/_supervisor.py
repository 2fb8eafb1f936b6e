"""The ``trainguard run`` supervisor: start the job, watch every rank, attribute signals.

The supervisor is the process the user (or the scheduler) started. It

1. plans the command (:mod:`._command`) and, for a script, runs the static
   scale-trigger analysis on it and its local imports;
2. blocks the catchable signals it supervises and accepts them with
   ``signal.sigtimedwait``: each one is attributed to its sender (pid, uid,
   command line) from ``siginfo``, recorded, and forwarded to the job, which
   therefore behaves as if the signal had reached it directly;
3. starts the job with the signal mask restored and a per-job directory in its
   environment, then loops: wait statuses of its child (``waitid`` with
   ``WSTOPPED | WCONTINUED``: a direct child's SIGSTOP and SIGKILL are seen
   exactly), the job directory's events and heartbeats, timeouts;
4. writes every alarm to the sentinel's alarm spool and to stderr, and exits
   with the job's status (or 1 when the job succeeded but alarms were raised;
   in canary mode 0/1 by alarms, 2 when the canary never reached its steps).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TextIO

from trainguard.errors import UsageError
from trainguard.findings import Severity
from trainguard.sentinel.alarms import Alarm, AlarmSpool
from trainguard.sentinel.config import ENV_SPOOL_DIR
from trainguard.sentinel.launcher._command import LaunchPlan, plan_command
from trainguard.sentinel.launcher._jobdir import (
    ENV_CANARY_STEPS,
    ENV_CANARY_WORLD_SIZE,
    ENV_HEARTBEAT_INTERVAL,
    ENV_JOB_DIR,
    ENV_RANK_SIGNALS,
    ENV_SUPERVISOR_PID,
    EventReader,
    JobDir,
    local_host,
)
from trainguard.sentinel.launcher._procinfo import describe_pid, proc_state, signal_name
from trainguard.sentinel.launcher._ranksignals import SI_CODES, classify_sender
from trainguard.sentinel.launcher._rules import JOB_SIGNALLED, RANK_STOPPED
from trainguard.sentinel.launcher._tracker import RankTracker

__all__ = ["SUPERVISED_SIGNALS", "RunOptions", "RunResult", "Supervisor"]

#: Catchable signals the supervisor attributes and forwards.
SUPERVISED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


@dataclass(frozen=True)
class RunOptions:
    """Everything ``trainguard run`` takes (validated on construction)."""

    command: tuple[str, ...]
    heartbeat_timeout: float = 60.0
    heartbeat_interval: float = 1.0
    stall_timeout: float = 0.0
    spool_dir: str | None = None
    job_dir: str | None = None
    canary_world_size: int = 0
    canary_steps: int = 20
    canary_timeout: float = 900.0
    inject: bool = True
    rank_signals: bool = True
    scale_check: bool = True
    poll_interval: float = 0.1
    ledger: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        if not self.command:
            raise UsageError("no command to run", hint="trainguard run -- torchrun ... train.py")
        if self.heartbeat_interval <= 0 or self.heartbeat_timeout <= 2 * self.heartbeat_interval:
            raise UsageError(
                "--heartbeat-timeout must exceed twice the heartbeat interval",
                found=f"timeout {self.heartbeat_timeout}, interval {self.heartbeat_interval}",
            )
        if self.canary_world_size < 0 or self.canary_steps < 1 or self.canary_timeout <= 0:
            raise UsageError("canary world size >= 0, canary steps >= 1, canary timeout > 0")
        if self.stall_timeout < 0 or self.poll_interval <= 0:
            raise UsageError("--stall-timeout >= 0 and a positive poll interval")


@dataclass
class RunResult:
    """The outcome of one supervised run."""

    exit_code: int
    plan: LaunchPlan
    job_dir: str
    spool_dir: str
    job_status: int | None = None
    canary: str | None = None
    alarms: list[Alarm] = field(default_factory=list)


class Supervisor:
    """Runs one job under supervision (see the module docstring)."""

    def __init__(self, options: RunOptions, *, out: TextIO | None = None) -> None:
        self.options = options
        self.out = out if out is not None else sys.stderr
        self.host = local_host()
        self.pid = os.getpid()
        self.alarms: list[Alarm] = []
        self.tracker = RankTracker(
            self.host,
            heartbeat_timeout=options.heartbeat_timeout,
            stall_timeout=options.stall_timeout,
            proc_state=proc_state,
        )
        self.spool_dir = (
            options.spool_dir
            or os.environ.get(ENV_SPOOL_DIR)
            or os.path.join(".trainguard", "alarms")
        )
        self._spool = AlarmSpool(self.spool_dir, rank=0)
        self._own_job_dir = options.job_dir is None
        self.job = JobDir(options.job_dir or tempfile.mkdtemp(prefix="trainguard-job-"))
        self.canary_state: str | None = None
        # The run the launcher's own alarms belong to in the ledger; exported to the ranks
        # (TRAINGUARD_RUN_ID), so their RunRecorder records the same run.
        self.run_id = (
            options.run_id or os.environ.get("TRAINGUARD_RUN_ID") or f"run-{uuid.uuid4().hex[:16]}"
        )
        self._ledger: Any = None

    # -- output ----------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"trainguard run: {text}", file=self.out, flush=True)

    def emit(self, alarm: Alarm) -> None:
        self.alarms.append(alarm)
        try:
            self._spool.append(alarm)
        except OSError as exc:
            self.say(f"could not write the alarm spool {self._spool.path}: {exc}")
        self.say(alarm.line())
        if self.options.ledger:
            self._to_ledger(alarm)

    def _emit_own(
        self, check: str, rule: str, message: str, evidence: dict[str, Any], severity: Severity
    ) -> None:
        """An alarm the launcher itself raises (about the job as a whole: rank 0, step 0)."""
        self.emit(
            Alarm(
                check=check,
                rule=rule,
                rank=0,
                host=self.host,
                step=0,
                message=message,
                evidence=evidence,
                severity=severity,
            )
        )

    def _to_ledger(self, alarm: Alarm) -> None:
        """Append the alarm as an Alert of this run; a ledger failure never hides it."""
        from trainguard.ledger import Ledger
        from trainguard.sentinel.alarms import alert_of

        try:
            if self._ledger is None:
                self._ledger = Ledger.open(self.options.ledger, create=True)
            self._ledger.append([alert_of(self.run_id, alarm.to_dict())])
        except Exception as exc:  # the spool and stderr already have it
            self.say(f"could not append the alarm to the ledger: {exc}")

    # -- setup -----------------------------------------------------------------------------
    def _static_scale_check(self, plan: LaunchPlan) -> None:
        if not (self.options.scale_check and plan.script and os.path.isfile(plan.script)):
            return
        from trainguard.sentinel.checks.scale import local_imports, scan_scale_triggers

        report = scan_scale_triggers(local_imports(plan.script))
        for finding in report.sorted_findings():
            if finding.severity < Severity.MEDIUM:
                continue
            self._emit_own(
                "scale", finding.rule, finding.message, dict(finding.evidence), finding.severity
            )

    def _environment(self) -> dict[str, str]:
        o = self.options
        env = dict(os.environ)
        env[ENV_JOB_DIR] = str(self.job.root)
        env[ENV_SUPERVISOR_PID] = str(self.pid)
        env[ENV_HEARTBEAT_INTERVAL] = str(o.heartbeat_interval)
        env[ENV_RANK_SIGNALS] = "1" if o.rank_signals else "0"
        env[ENV_SPOOL_DIR] = os.path.abspath(self.spool_dir)
        env["TRAINGUARD_RUN_ID"] = self.run_id
        if o.canary_world_size:
            env[ENV_CANARY_WORLD_SIZE] = str(o.canary_world_size)
            env[ENV_CANARY_STEPS] = str(o.canary_steps)
        return env

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        plan = plan_command(self.options.command, inject=self.options.inject)
        self.job.create()
        if plan.note:
            self.say(
                f"running the command unwrapped ({plan.note}): no exit statuses or in-rank signal attribution"
            )
        self._static_scale_check(plan)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISED_SIGNALS)
        try:
            child = subprocess.Popen(
                list(plan.argv),
                env=self._environment(),
                # The job gets the signal mask we had: blocking is ours alone.
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, previous),
            )
            status = self._loop(child, plan)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            self._spool.close()
            if self._ledger is not None:
                self._ledger.close()
        result = RunResult(
            exit_code=self._exit_code(status),
            plan=plan,
            job_dir=str(self.job.root),
            spool_dir=self.spool_dir,
            job_status=status,
            canary=self.canary_state,
            alarms=list(self.alarms),
        )
        self._summary(result)
        if self._own_job_dir:
            shutil.rmtree(self.job.root, ignore_errors=True)
        return result

    def _loop(self, child: subprocess.Popen[bytes], plan: LaunchPlan) -> int:
        reader = EventReader(self.job)
        started = time.monotonic()
        direct_rank = plan.mode == "python"
        if direct_rank:
            self.tracker.register(0, child.pid, started)
        while True:
            info = signal.sigtimedwait(SUPERVISED_SIGNALS, self.options.poll_interval)
            if info is not None:
                self._on_signal(info, child)
            self._poll(reader)
            status = self._wait(child, direct_rank)
            if status is not None:
                self._poll(reader)  # events a dying rank wrote just before it exited
                if direct_rank:
                    self._record(self.tracker.on_exit(0, child.pid, status, time.monotonic()))
                self._poll(reader)
                return status
            now = time.monotonic()
            self._record(self.tracker.check_timeouts(now))
            self._canary(child, now - started)

    def _record(self, alarms: list[Alarm]) -> None:
        for alarm in alarms:
            self.emit(alarm)

    def _poll(self, reader: EventReader) -> None:
        now = time.monotonic()
        for event in reader.poll():
            self._record(self.tracker.on_event(event, now))
        for beat in self.job.read_heartbeats().values():
            self.tracker.on_heartbeat(beat, now)

    def _wait(self, child: subprocess.Popen[bytes], direct_rank: bool) -> int | None:
        """Non-blocking ``waitid`` on the child: its exit status, after reporting stops."""
        while True:
            try:
                info = os.waitid(
                    os.P_PID, child.pid, os.WEXITED | os.WSTOPPED | os.WCONTINUED | os.WNOHANG
                )
            except ChildProcessError:
                return child.returncode if child.returncode is not None else 255
            if info is None:
                return None
            if info.si_code == os.CLD_STOPPED:
                if direct_rank:
                    self._record(self.tracker.on_stop(0, info.si_status, "wait status of the rank"))
                else:
                    self._emit_own(
                        "kills",
                        RANK_STOPPED.id,
                        f"the launcher (pid {child.pid}) was stopped by {signal_name(info.si_status)}",
                        {"pid": child.pid, "signal": info.si_status},
                        RANK_STOPPED.severity,
                    )
                continue
            if info.si_code == os.CLD_CONTINUED:
                if direct_rank:
                    self.tracker.on_continue(0)
                continue
            code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            child.returncode = code
            return code

    def _on_signal(self, info: signal.struct_siginfo, child: subprocess.Popen[bytes]) -> None:
        signo, pid, uid, code = info.si_signo, info.si_pid, info.si_uid, info.si_code
        origin = classify_sender(pid, code, own_pid=self.pid, launcher_pids=(), peer_pids=())
        sender = describe_pid(pid)
        evidence = {
            "signal": signo,
            "signal_name": signal_name(signo),
            "sender_pid": pid,
            "sender_uid": uid,
            "si_code": SI_CODES.get(code, str(code)),
            "origin": origin,
            "sender": sender,
        }
        self.tracker.shutting_down = self.tracker.shutting_down or signo in (
            signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT
        )  # fmt: skip
        if origin == "kernel":
            # A terminal's Ctrl-C reaches the whole foreground group, the job included.
            self.say(f"{signal_name(signo)} from the terminal")
            return
        who = f"pid {pid} (uid {uid}{' ' + sender['user'] if sender.get('user') else ''})"
        if sender.get("cmdline"):
            who += f" `{sender['cmdline'][:120]}`"
        self._emit_own(
            "kills",
            JOB_SIGNALLED.id,
            f"the job received {signal_name(signo)} from {who}; forwarded to the job",
            evidence,
            JOB_SIGNALLED.severity,
        )
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signo)

    def _canary(self, child: subprocess.Popen[bytes], elapsed: float) -> None:
        o = self.options
        if not o.canary_world_size or self.canary_state is not None:
            return
        steps = [s.step for s in self.tracker.ranks.values() if not s.exited]
        if steps and all(step is not None and step >= o.canary_steps for step in steps):
            self.canary_state = "completed"
        elif elapsed > o.canary_timeout:
            self.canary_state = "timed out"
        else:
            return
        self.say(
            f"canary {self.canary_state} (world size {o.canary_world_size} reported); stopping the job"
        )
        self.tracker.shutting_down = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)

    def _exit_code(self, status: int | None) -> int:
        if self.options.canary_world_size:
            if self.alarms:
                return 1
            return 0 if self.canary_state == "completed" else 2
        if status is None:
            return 2
        if status < 0:
            return 128 - status
        if status:
            return status
        return 1 if self.alarms else 0

    def _summary(self, result: RunResult) -> None:
        what = f"job exited with status {result.job_status}"
        if result.canary:
            what = f"canary {result.canary}"
        self.say(f"{what}; {len(result.alarms)} alarm(s); spool {os.path.abspath(self.spool_dir)}")
