"""``trainguard run``: supervise a training job's ranks (check 9, kills).

The supervisor starts the job (torchrun, ``python script.py`` or any command),
starts every rank through a small bootstrap (heartbeat thread, in-rank signal
attribution, canary patch), and reports, as sentinel alarms in the spool:

* a rank that died (exit status) or was killed (signal; the sender's pid, uid
  and command line for catchable signals; SIGKILL reported as such, with the
  killer when another rank's audit hook saw the ``os.kill``);
* a rank that stopped (SIGSTOP: seen in its wait status or /proc state ``T``;
  the SIGCONT that resumes it is attributed) or went silent (no heartbeat for
  ``heartbeat_timeout`` seconds);
* signals sent to the job itself, attributed with ``sigtimedwait`` and forwarded;
* scale-conditioned branches in the training script (static), and in canary
  mode whatever fires when the job believes it runs at ``canary_world_size``.

Example:
    >>> from trainguard.sentinel.launcher import RunOptions, Supervisor
    >>> options = RunOptions(command=("python", "train.py"), heartbeat_timeout=30)
    >>> Supervisor(options).run().exit_code  # doctest: +SKIP
    0
"""

from __future__ import annotations

from trainguard.sentinel.launcher._canary import CanaryPatch, install_canary
from trainguard.sentinel.launcher._command import LaunchPlan, plan_command
from trainguard.sentinel.launcher._heartbeat import note_step, start_from_env
from trainguard.sentinel.launcher._jobdir import Event, Heartbeat, JobDir
from trainguard.sentinel.launcher._ranksignals import SignalAttributor, SignalRecord
from trainguard.sentinel.launcher._supervisor import RunOptions, RunResult, Supervisor
from trainguard.sentinel.launcher._tracker import RankTracker

__all__ = [
    "CanaryPatch",
    "Event",
    "Heartbeat",
    "JobDir",
    "LaunchPlan",
    "RankTracker",
    "RunOptions",
    "RunResult",
    "SignalAttributor",
    "SignalRecord",
    "Supervisor",
    "install_canary",
    "note_step",
    "plan_command",
    "start_from_env",
]
