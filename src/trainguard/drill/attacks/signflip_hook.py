"""A global optimizer hook flips the sign of every update after the optimizer computed it.

``torch.optim.optimizer.register_optimizer_step_pre_hook`` and
``register_optimizer_step_post_hook`` apply to every optimizer in the process:
the pre-hook remembers the parameters, the post-hook reflects them through
that point. Global post-hooks run after the optimizer's own post-hooks, so the
update the sentinel verifies is the honest one; the flip lands after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import JobContext

NAME = "signflip-hook"
TITLE = "optimizer update sign flipped by a global optimizer hook"
INCIDENT = "optimizer updates had their direction flipped, so training diverged or stalled"
EXPECTED_CHECKS = ("census", "weights")
ATTACK_STEP = 8


def inject(job: JobContext, model: Any, optimizer: Any, step: int) -> None:
    if step != job.attack_step:
        return
    import torch
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    saved: dict[int, list[torch.Tensor]] = {}

    def remember(opt: Any, args: Any, kwargs: Any) -> None:
        saved[id(opt)] = [p.detach().clone() for g in opt.param_groups for p in g["params"]]

    def flip(opt: Any, args: Any, kwargs: Any) -> None:
        params = [p for g in opt.param_groups for p in g["params"]]
        with torch.no_grad():
            for p, b in zip(params, saved.pop(id(opt), []), strict=False):
                p.copy_(2 * b - p)

    job.state["hooks"] = (
        register_optimizer_step_pre_hook(remember),
        register_optimizer_step_post_hook(flip),
    )
    job.attacked(step, "global optimizer step pre/post hooks registered that flip every update")
