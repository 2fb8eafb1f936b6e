"""Plain training loops: the hooks that let ``protect()`` work with no change to the loop.

Three hooks, all public PyTorch API:

* a forward pre-hook on the protected module (``register_forward_pre_hook``): the
  weights are verified before the first training forward after each step;
* an optimizer step pre-hook and post-hook on the optimizer instance
  (``Optimizer.register_step_pre_hook`` / ``register_step_post_hook``): everything
  else, including the step's one collective and the veto.

Every handle is recorded in ``ctx.own_hooks`` so the census check can verify
that the sentinel's own hooks are still installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.sentinel._core import Sentinel

__all__ = ["install", "uninstall"]

_HANDLES = "_trainguard_handles"


def install(sentinel: Sentinel) -> None:
    """Register the sentinel's hooks on its model and optimizer."""
    ctx = sentinel.ctx
    handles: list[Any] = [
        ctx.model.register_forward_pre_hook(sentinel._on_forward),
        ctx.optimizer.register_step_pre_hook(sentinel._before_step),
        ctx.optimizer.register_step_post_hook(sentinel._after_step),
    ]
    ctx.own_hooks.extend(
        [
            ("module_forward_pre", ctx.model, handles[0].id),
            ("optimizer_step_pre", ctx.optimizer, handles[1].id),
            ("optimizer_step_post", ctx.optimizer, handles[2].id),
        ]
    )
    setattr(sentinel, _HANDLES, handles)


def uninstall(sentinel: Sentinel) -> None:
    """Remove what :func:`install` registered (idempotent)."""
    for handle in getattr(sentinel, _HANDLES, []):
        handle.remove()
    setattr(sentinel, _HANDLES, [])
