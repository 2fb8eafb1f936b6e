"""Sabotage that fires only on big jobs: a helper sleeps on rank 1 when the world exceeds 256.

The incident's sleeps and kills fired only on jobs with more than 256 GPUs, so
small debugging runs never reproduced them. The drill's job is a colleague's
training script with a local "performance tuning" module whose branch on
``WORLD_SIZE > 256`` sleeps. It runs under ``trainguard run
--canary-world-size 512`` with two processes: the launcher's static pass flags
the branch before the job starts, the sentinel's own pass flags it again at
``protect()``, and the canary makes the trigger actually fire in a 2-process run.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import DrillContext, JobContext, Outcome

NAME = "scale-trigger"
TITLE = "trigger that fires only when the world size exceeds 256"
INCIDENT = "the sleeps and kills fired only on jobs with more than 256 GPUs, never in small repros"
EXPECTED_CHECKS = ("scale",)
EXPECTED_RULES = ("sentinel.scale.world-size-branch",)
ATTACK_STEP = 0
BOUND = 0
CANARY_WORLD_SIZE = 512

TRAIN_PY = '''"""Our training script: the standard drill job plus the team's tuning helpers."""

import tuning  # noqa: F401  (applies the tuning at import, as helper modules do)

from trainguard.drill._train import main

raise SystemExit(main())
'''

TUNING_PY = '''"""Performance tuning for large jobs (the insider's helper module)."""

import os
import time

import torch.distributed as dist


def world_size_seen():
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def tune(rank, step):
    """Returns True when the 'tuning' (a sleep) ran."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 256 and rank == 1:
        time.sleep(0.004)
        return True
    return False
'''


def prepare(ctx: DrillContext) -> None:
    code = ctx.workdir / "code"
    code.mkdir()
    (code / "train.py").write_text(TRAIN_PY, encoding="utf-8")
    (code / "tuning.py").write_text(TUNING_PY, encoding="utf-8")
    ctx.script = code / "train.py"
    ctx.facts["script"] = str(ctx.script)


def inject(job: JobContext, model: Any, optimizer: Any, step: int) -> None:
    tuning = sys.modules.get("tuning")
    if tuning is None:
        return
    if tuning.tune(job.rank, step) and not job.state.get("fired"):
        job.state["fired"] = True
        job.event("note", trigger_fired=True, world_size_seen=tuning.world_size_seen(),
                  real_world_size=job.world)  # fmt: skip


def judge(ctx: DrillContext, outcome: Outcome) -> None:
    fired = [e for e in outcome.events_of("note") if e.get("trigger_fired")]
    outcome.evidence["trigger_fired_in_canary"] = bool(fired)
    if fired:
        outcome.evidence["world_size_seen_by_job_code"] = fired[0].get("world_size_seen")
        outcome.evidence["real_world_size"] = fired[0].get("real_world_size")
