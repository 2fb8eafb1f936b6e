"""A checkpoint is edited on disk between the step that saved it and the load that reads it.

Rank 0 saves a checkpoint with ``trainguard.save`` (its digest is recorded in the
ledger as produced by this run). Before the job reads it back, the insider's
code opens the file with plain ``torch.load``, nudges one tensor and writes it
back with plain ``torch.save``: a valid checkpoint that loads without a sound.
The job reads it with ``trainguard.load`` under a strict ledger recording,
which refuses bytes that no recorded run produced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import DrillContext, JobContext

NAME = "checkpoint-edit"
TITLE = "checkpoint edited on disk between save and load"
INCIDENT = (
    "checkpoints were altered so results could not be reproduced and damage could not be proven"
)
EXPECTED_CHECKS = ("ledger",)
EXPECTED_RULES = ("ledger.unknown-provenance", "drill.checkpoint-changed")
ATTACK_STEP = 8


def prepare(ctx: DrillContext) -> None:
    # The job saves after step ATTACK_STEP - 1 and reads back after ATTACK_STEP.
    ctx.job_args += ["--save-step", str(ATTACK_STEP - 1)]


def inject(job: JobContext, model: Any, optimizer: Any, step: int) -> None:
    if job.rank != 0 or step != job.attack_step:
        return
    import torch

    path = job.workdir / "checkpoints" / f"step-{step - 1}.pt"
    state = torch.load(path, weights_only=True, map_location="cpu")
    name = next(k for k in state if k.endswith("mlp.0.weight"))
    state[name] = state[name] * 1.01
    torch.save(state, path)
    job.attacked(step, f"{path.name}: {name} scaled by 1.01 and written back with torch.save")
