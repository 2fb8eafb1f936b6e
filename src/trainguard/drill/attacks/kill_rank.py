"""Another process kills rank 1 with SIGTERM in the middle of the run.

The incident killed processes of colleagues' jobs so that they looked flaky.
A separate helper process (started by the drill, not by the job) watches rank
1's heartbeat and sends it SIGTERM at the planned step. The job dies; the
question is whether the launcher says who killed it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import DrillContext, Outcome

NAME = "kill-rank"
TITLE = "rank 1 killed by SIGTERM from another process"
INCIDENT = "processes of colleagues' jobs were killed so the jobs failed or looked flaky"
EXPECTED_CHECKS = ("kills",)
EXPECTED_RULES = ("sentinel.kills.rank-killed", "sentinel.kills.signal-received")
STEPS = 200
ATTACK_STEP = 10
BOUND = 2
EXPECT_JOB_FAILURE = True
#: The rank the helper kills.
TARGET = 1


def prepare(ctx: DrillContext) -> None:
    out = ctx.workdir / "sender.json"
    helper = Path(__file__).with_name("_sender.py")
    proc = subprocess.Popen(
        [sys.executable, str(helper), str(ctx.job_dir), str(TARGET), str(ATTACK_STEP),
         str(int(signal.SIGTERM)), str(out), str(ctx.drill.timeout)],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    ctx.facts["helper_pid"] = proc.pid

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    ctx.cleanups.append(stop)


def judge(ctx: DrillContext, outcome: Outcome) -> None:
    out = ctx.workdir / "sender.json"
    sent = json.loads(out.read_text()) if out.is_file() else None
    if sent is None:
        outcome.error = "the helper process never sent its signal (rank 1 never reached the step)"
        return
    outcome.evidence["signal_sent_at_step"] = sent["step"]
    # Attack events come from the job; this one comes from the helper.
    outcome.events.append({"kind": "attack", "rank": TARGET, "step": int(sent["step"])})
    named = [
        a for a in outcome.detections
        if a.rank == TARGET and a.evidence.get("sender_pid") == sent["sender_pid"]
    ]  # fmt: skip
    outcome.evidence["sender_named"] = bool(named)
    if named:
        outcome.detections = named
