"""Rank 1 reseeds torch's global generator in the middle of the run.

The edited PyTorch of the incident reset random seeds, so runs stopped
reproducing (data order and dropout masks change from that step on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import JobContext

NAME = "rng-reseed"
TITLE = "RNG reseeded mid-run (torch.manual_seed on rank 1)"
INCIDENT = "the edited PyTorch install reset random seeds, so runs could not be reproduced"
EXPECTED_CHECKS = ("rng",)
ATTACK_STEP = 8


def inject(job: JobContext, model: Any, optimizer: Any, step: int) -> None:
    if job.rank == 1 and step == job.attack_step:
        import torch

        torch.manual_seed(1234)
        job.attacked(step, "torch.manual_seed(1234) on rank 1")
