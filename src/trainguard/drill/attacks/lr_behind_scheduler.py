"""The learning rate is changed behind the scheduler's back in the middle of the run.

Code other than the LR scheduler writes ``param_groups[0]['lr']`` (ten times
what the schedule says) right before a step: training degrades and the loss
curve just looks unlucky.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import JobContext

NAME = "lr-behind-scheduler"
TITLE = "learning rate changed behind the scheduler"
INCIDENT = "training hyper-parameters were quietly altered so that runs degraded"
EXPECTED_CHECKS = ("updates",)
EXPECTED_RULES = ("sentinel.lr-tampered",)
ATTACK_STEP = 8


def inject(job: JobContext, model: Any, optimizer: Any, step: int) -> None:
    if step == job.attack_step:
        group = optimizer.param_groups[0]
        before = float(group["lr"])
        group["lr"] = before * 10
        job.attacked(step, f"param_groups[0]['lr'] {before:g} -> {before * 10:g}")
