"""The rules of the launcher's alarms (check 9, ``kills``)."""

from __future__ import annotations

from trainguard.findings import Rule, Severity

__all__ = [
    "JOB_SIGNALLED",
    "RANK_FAILED",
    "RANK_KILLED",
    "RANK_RESUMED",
    "RANK_SILENT",
    "RANK_STOPPED",
    "RANK_VANISHED",
    "SIGNALLED",
    "STEP_STALLED",
]

RANK_KILLED = Rule(
    "sentinel.kills.rank-killed",
    Severity.HIGH,
    "A rank was killed by a signal",
    "A training process ended by a signal that did not come from the launcher. For catchable "
    "signals the sender's pid, uid and command line are in the evidence (sigwaitinfo); SIGKILL "
    "cannot be caught, so its sender is named only when another rank's audit hook saw the kill.",
)
RANK_FAILED = Rule(
    "sentinel.kills.rank-failed",
    Severity.MEDIUM,
    "A rank exited with an error",
    "A training process exited with a non-zero status. A crash can be a bug or sabotage; the "
    "exit status and the rank's last step are in the evidence.",
)
RANK_STOPPED = Rule(
    "sentinel.kills.rank-stopped",
    Severity.HIGH,
    "A rank was stopped",
    "A training process was stopped (SIGSTOP or a terminal stop signal): it holds its GPU and "
    "every peer waits for it. SIGSTOP cannot be caught, so its sender is unknown; the SIGCONT "
    "that resumes the rank is attributed and usually comes from the same actor.",
)
RANK_RESUMED = Rule(
    "sentinel.kills.rank-resumed",
    Severity.MEDIUM,
    "A stopped or silent rank was resumed by a signal",
    "A SIGCONT resumed a rank that had stopped; the evidence names the sending process and user, "
    "the likely author of the stop as well.",
)
RANK_SILENT = Rule(
    "sentinel.kills.rank-silent",
    Severity.HIGH,
    "A rank stopped sending heartbeats",
    "No heartbeat arrived from a rank for longer than the heartbeat timeout while its process "
    "still exists: it is stopped, hung in uninterruptible I/O, or its heartbeat was silenced.",
)
RANK_VANISHED = Rule(
    "sentinel.kills.rank-vanished",
    Severity.HIGH,
    "A rank disappeared without an exit status",
    "A rank's process is gone but no exit was reported for it (it is not a child the launcher "
    "could wait for): it was most likely killed with SIGKILL, by a person, a process or the "
    "kernel's out-of-memory killer.",
)
SIGNALLED = Rule(
    "sentinel.kills.signal-received",
    Severity.HIGH,
    "A rank received a signal from outside the launcher",
    "A catchable signal reached a training process from a process other than its launcher "
    "(another user's process, a peer rank, the rank itself). The sender's pid, uid and command "
    "line are in the evidence.",
)
JOB_SIGNALLED = Rule(
    "sentinel.kills.job-signalled",
    Severity.MEDIUM,
    "The job was sent a signal",
    "The `trainguard run` supervisor received a signal (it forwards it to the job). Schedulers "
    "send SIGTERM on pre-emption; anyone else doing so is stopping the job. The sender is named.",
)
STEP_STALLED = Rule(
    "sentinel.kills.step-stalled",
    Severity.MEDIUM,
    "A rank keeps beating but its training step does not advance",
    "The process is alive (its heartbeat thread writes) but its sentinel reported no new step "
    "for longer than the stall timeout: the loop is stuck, or the sentinel's hooks were removed.",
)
