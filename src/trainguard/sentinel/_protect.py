"""``protect()``: build the context, the checks and the alarm routing, then install the hooks."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from trainguard.errors import ConfigError, UsageError
from trainguard.sentinel._core import Sentinel
from trainguard.sentinel._fingerprint import Fingerprinter, fresh_key
from trainguard.sentinel.alarms import (
    Alarm,
    AlarmRouter,
    AlarmSpool,
    ConsoleLimiter,
    default_ledger_sink,
)
from trainguard.sentinel.checks import CHECK_MODULES, Check, SentinelContext, available_checks
from trainguard.sentinel.config import SentinelConfig
from trainguard.sentinel.integrations import ddp, fsdp, loop

__all__ = ["protect"]

log = logging.getLogger("trainguard.sentinel")


def _params(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    params = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                params.append(p)
    return params


def _names(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[str]:
    by_id: dict[int, str] = {}
    for name, p in ddp.unwrap(model).named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), name)
    return [by_id.get(id(p), f"optimizer.param[{i}]") for i, p in enumerate(params)]


def protect(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    config: SentinelConfig | None = None,
    on_alarm: Callable[[Alarm], object] | None = None,
    scheduler: Any = None,
    process_group: dist.ProcessGroup | None = None,
    **options: Any,
) -> Sentinel:
    """Protect a training job: install the sentinel's hooks on ``model`` and ``optimizer``.

    Call it on every rank (it runs one setup collective), after wrapping the model
    in DDP or ``fully_shard`` and creating the optimizer. A plain loop needs no other
    change; call ``sentinel.observe(loss=loss)`` where the loop has a loss.

    Args:
        model: the module whose forward starts a step (the DDP/FSDP wrapper if any).
        optimizer: the optimizer whose ``step()`` commits updates.
        config: a :class:`SentinelConfig`; ``options`` override its fields, e.g.
            ``log_every=10`` or ``checks={"updates": "veto", "census": {"every": 10}}``.
        on_alarm: called with every :class:`Alarm` on this rank.
        scheduler: the LR scheduler, so the updates check can tell its learning rates
            from ones changed behind its back (found automatically in most loops).
        process_group: the group to vote in (default: the world).

    Returns:
        The running :class:`Sentinel` (a context manager; ``close()`` removes everything).
    """
    cfg = config or SentinelConfig()
    if options:
        cfg = cfg.with_options(**options)
    unknown = set(cfg.checks) - set(CHECK_MODULES)
    if unknown:
        raise ConfigError(
            f"unknown sentinel check(s) {sorted(unknown)}", expected=f"one of {list(CHECK_MODULES)}"
        )
    params = _params(optimizer)
    if not params:
        raise UsageError("the optimizer has no trainable parameters to protect")

    if dist.is_available() and dist.is_initialized():
        group = process_group or dist.group.WORLD
        rank, world = dist.get_rank(group), dist.get_world_size(group)
    else:
        group, rank, world = None, 0, 1
    host = socket.gethostname()
    hosts = [host]
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, host, group=group)  # setup only, not the hot path
        hosts = [str(h) for h in gathered]

    key = fresh_key()
    if world > 1:
        # Replicas compare fingerprints, so every rank needs the same key: rank 0's.
        shared: list[Any] = [key]
        dist.broadcast_object_list(
            shared, src=dist.get_global_rank(group, 0) if group else 0, group=group
        )
        key = int(shared[0])
    is_dtensor = any(fsdp.is_dtensor(p) for p in params)
    local = [getattr(p, "_local_tensor", p).detach() if is_dtensor else p.detach() for p in params]
    ctx = SentinelContext(
        model=model,
        optimizer=optimizer,
        params=params,
        names=_names(model, params),
        replicated=[world > 1 and fsdp.replicated(p) for p in params],
        device=local[0].device,
        rank=rank,
        world=world,
        hosts=hosts,
        group=group,
        config=cfg,
        fingerprinter=Fingerprinter(local, key=key),
        schedulers=[scheduler] if scheduler is not None else [],
        host=host,
        is_dtensor=is_dtensor,
    )

    classes, missing = available_checks()
    skipped = {name: "not installed in this version" for name in missing}
    checks: list[Check] = []
    for cls in classes:
        check_cfg = cfg.for_check(cls.name, cls.defaults)
        if not check_cfg.enabled:
            skipped[cls.name] = "disabled by configuration"
            continue
        reason = cls.applicable(ctx)
        if reason:
            skipped[cls.name] = reason
            continue
        checks.append(cls(ctx, check_cfg))
    for name, reason in skipped.items():
        log.info("trainguard sentinel: check %s not running: %s", name, reason)

    spool = AlarmSpool(cfg.resolved_spool_dir(), rank=rank, fsync=cfg.fsync == "always")
    console = ConsoleLimiter(cfg.console_burst, cfg.console_interval_s) if cfg.console else None
    ledger = default_ledger_sink() if cfg.ledger else None
    router = AlarmRouter(spool, console=console, ledger=ledger, on_alarm=on_alarm)
    sentinel = Sentinel(ctx, checks, router, skipped)
    loop.install(sentinel)
    _start_heartbeat()
    return sentinel


def _start_heartbeat() -> None:
    """Under ``trainguard run``, start this rank's heartbeat thread (no-op otherwise)."""
    try:
        from trainguard.sentinel.launcher._heartbeat import start_from_env
    except ImportError:
        return
    start_from_env()
