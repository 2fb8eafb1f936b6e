"""DistributedDataParallel: find the wrapped module and describe DDP's communication hooks.

Under DDP every rank holds the same parameters, so all of them are replicated
(the replicas check compares them every step). DDP's gradient communication can
be replaced with ``register_comm_hook``; a comm hook sees and can rewrite every
gradient bucket of every rank, so the census reports any hook that appears or
changes after ``protect()``.

torchrun example (``train.py``)::

    dist.init_process_group("gloo")            # "nccl" on GPUs
    model = DDP(Net())
    opt = torch.optim.AdamW(model.parameters())
    with trainguard.protect(model, opt) as sentinel:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            sentinel.observe(loss=loss)
            loss.backward(); opt.step(); opt.zero_grad()
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["comm_hooks", "is_ddp", "unwrap"]


def is_ddp(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.parallel.DistributedDataParallel)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module DDP wraps (parameter names without the ``module.`` prefix), else ``module``."""
    inner = module.module if is_ddp(module) else module
    return inner if isinstance(inner, torch.nn.Module) else module


def comm_hooks(module: torch.nn.Module) -> list[dict[str, Any]]:
    """DDP's registered comm hooks as plain data (empty when not DDP or none registered)."""
    if not is_ddp(module):
        return []
    hooks = []
    for hook, _state in getattr(module, "_comm_hooks", []):
        code = getattr(hook, "__code__", None)
        hooks.append(
            {
                "hook": getattr(hook, "__qualname__", repr(hook)),
                "module": getattr(hook, "__module__", None),
                "where": f"{code.co_filename}:{code.co_firstlineno}" if code else None,
                "id": id(hook),
            }
        )
    try:
        ddp: Any = module
        builtin = ddp._get_ddp_logging_data().get("comm_hook")
    except Exception:  # logging data is best-effort across torch versions
        builtin = None
    if builtin and not hooks:
        hooks.append({"hook": str(builtin), "module": None, "where": None, "id": 0})
    return hooks
