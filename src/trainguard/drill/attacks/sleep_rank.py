"""Rank 1 sleeps at random, for 5-15% of a step, on three steps out of four.

The incident slowed jobs with random sleeps that looked like a flaky machine.
The sleeps start after the straggler check's calibration window and are sized
from rank 1's own recent step times (at least 5% of a step).

The job trains on twice the drill model's batch: with the default one a step
takes ~35 ms on a fast 2-core host, so a 5% sleep (under 2 ms) is the size of the
host's scheduling noise, which no real training step is near; there the check
named rank 1 only after 23-27 steps, or not at all after first blaming rank 0, in
13 of 72 runs. With 16 sequences (a step of ~70 ms there) all of 24 runs were
caught within 6-14 steps.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import DrillContext, JobContext, Outcome

NAME = "sleep-rank"
TITLE = "random sleeps on one rank (5-15% of a step)"
INCIDENT = "random sleeps slowed the insider's colleagues' jobs"
EXPECTED_CHECKS = ("stragglers",)
STEPS = 80
ATTACK_STEP = 50
BOUND = 20
#: The rank that sleeps; the alarm must name it.
SLEEPER = 1
#: Sequences per step (twice the drill model's): a step long enough that its 5-15%
#: stands above the host's scheduling noise (see the module docstring).
BATCH = 16


def prepare(ctx: DrillContext) -> None:
    ctx.job_args += ["--batch", str(BATCH)]


def inject(job: JobContext, model: Any, optimizer: Any, step: int) -> None:
    if job.rank != SLEEPER or step < job.attack_step:
        return
    rng = job.state.setdefault("rng", random.Random(step))  # private: the global RNG is watched
    if step == job.attack_step:
        job.state["step_s"] = statistics.median(job.step_times[-20:])
        job.attacked(step, f"rank {SLEEPER} starts random sleeps", step_s=job.state["step_s"])
    if rng.random() < 0.75:
        time.sleep(job.state["step_s"] * rng.uniform(0.05, 0.15))


def judge(ctx: DrillContext, outcome: Outcome) -> None:
    # Only an alarm that names the sleeping rank counts.
    outcome.detections = [a for a in outcome.detections if a.rank == SLEEPER]
    outcome.evidence["sleeping_rank"] = SLEEPER
