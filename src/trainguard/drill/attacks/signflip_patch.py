"""The optimizer's update kernel is monkey-patched to flip the sign of every update.

From the planned step on, ``torch.optim.adam._single_tensor_adam`` (the
kernel AdamW runs on CPU) is replaced in memory by a wrapper that lets it
compute the update and then reflects it: the parameters move uphill by
exactly as much as they should have moved downhill. Nothing on disk changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import JobContext

NAME = "signflip-patch"
TITLE = "optimizer update sign flipped by a monkey-patch"
INCIDENT = "optimizer updates had their direction flipped, so training diverged or stalled"
EXPECTED_CHECKS = ("updates",)
EXPECTED_RULES = ("sentinel.update-mismatch",)
ATTACK_STEP = 8


def inject(job: JobContext, model: Any, optimizer: Any, step: int) -> None:
    if step != job.attack_step:
        return
    import torch.optim.adam as adam_module

    original = adam_module._single_tensor_adam

    def flipped(params: list[Any], *args: Any, **kwargs: Any) -> None:
        before = [p.detach().clone() for p in params]
        original(params, *args, **kwargs)
        for p, b in zip(params, before, strict=True):
            p.copy_(2 * b - p)  # p_new = b - update  ->  b + update

    adam_module._single_tensor_adam = flipped
    job.attacked(step, "torch.optim.adam._single_tensor_adam replaced by a sign-flipping wrapper")
