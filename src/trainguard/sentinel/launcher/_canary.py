"""Canary mode: report the job's real (large) world size while running few processes.

Sabotage that fires only on jobs above some size (the 2024 incident: more than
256 GPUs) never fires in a small reproduction. A canary run makes the job code
*see* the production world size, so such a trigger fires in a cheap run and the
other checks (stragglers, census, audit...) catch what it does.

What is patched, in the rank process only:

* ``WORLD_SIZE`` (and ``ROLE_WORLD_SIZE``/``GROUP_WORLD_SIZE`` when set) in
  ``os.environ``; ``init_process_group`` sees the real value for the duration
  of the call, so the process group still forms with the real processes;
* ``torch.distributed.get_world_size()`` for the default group, but only when
  called from outside torch: torch itself (DDP, FSDP, collectives sizing
  their buffers) keeps the real value.

Job code that sizes a collective by ``get_world_size()`` itself (an
``all_gather`` list) fails in a canary: that is reported, not hidden.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CanaryPatch", "active_canary", "install_canary"]

_TORCH_PREFIXES = ("torch.", "trainguard.")


@dataclass
class CanaryPatch:
    """The reported and the real world size, and what was patched."""

    world_size: int
    real_world_size: int
    patched: list[str]
    #: (owner, attribute, replacement) of every function replaced: the sentinel
    #: registers them as its own patches so its census expects them.
    replaced: list[tuple[object, str, object]] = field(default_factory=list)

    def restore_env(self) -> None:
        """Put the real sizes back in ``os.environ`` (used around init_process_group)."""
        _set_env(self.real_world_size, _real_nodes(self.real_world_size))

    def apply_env(self) -> None:
        _set_env(self.world_size, _nodes_for(self.world_size))


def _local_world_size() -> int:
    try:
        return max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def _nodes_for(world_size: int) -> int:
    return math.ceil(world_size / _local_world_size())


def _real_nodes(real: int) -> int:
    try:
        return int(os.environ.get("TRAINGUARD_REAL_GROUP_WORLD_SIZE", _nodes_for(real)))
    except ValueError:
        return _nodes_for(real)


def _set_env(world_size: int, nodes: int) -> None:
    os.environ["WORLD_SIZE"] = str(world_size)
    if "ROLE_WORLD_SIZE" in os.environ:
        os.environ["ROLE_WORLD_SIZE"] = str(world_size)
    if "GROUP_WORLD_SIZE" in os.environ:
        os.environ["GROUP_WORLD_SIZE"] = str(nodes)


def _called_from_torch() -> bool:
    # Frame 0 is this function, 1 the patched wrapper, 2 its caller.
    caller = sys._getframe(2).f_globals.get("__name__", "")
    return isinstance(caller, str) and (caller == "torch" or caller.startswith(_TORCH_PREFIXES))


def _patch_torch(patch: CanaryPatch) -> None:
    try:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d as c10d
    except ImportError:
        return
    if not dist.is_available():
        return
    real_get_world_size: Callable[..., int] = c10d.get_world_size
    real_init: Callable[..., Any] = c10d.init_process_group

    @functools.wraps(real_get_world_size)
    def get_world_size(group: Any = None) -> int:
        size = real_get_world_size(group)
        if (group is None or group is c10d.GroupMember.WORLD) and not _called_from_torch():
            return patch.world_size
        return size

    @functools.wraps(real_init)
    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        # The job may pass the (canary) WORLD_SIZE it read: the group must form
        # with the processes that really exist.
        if kwargs.get("world_size") == patch.world_size:
            kwargs["world_size"] = patch.real_world_size
        if len(args) >= 4 and args[3] == patch.world_size:
            args = (*args[:3], patch.real_world_size, *args[4:])
        patch.restore_env()
        try:
            return real_init(*args, **kwargs)
        finally:
            patch.apply_env()

    for module in (dist, c10d):
        module.get_world_size = get_world_size  # type: ignore[attr-defined]
        module.init_process_group = init_process_group  # type: ignore[attr-defined]
        patch.replaced += [
            (module, "get_world_size", get_world_size),
            (module, "init_process_group", init_process_group),
        ]
    patch.patched += ["torch.distributed.get_world_size", "torch.distributed.init_process_group"]


_ACTIVE: CanaryPatch | None = None


def active_canary() -> CanaryPatch | None:
    """The canary patch installed in this process, if any."""
    return _ACTIVE


def install_canary(world_size: int, *, patch_torch: bool = True) -> CanaryPatch:
    """Make this process report ``world_size``; returns what was patched.

    Call it before the job code runs (the rank bootstrap does). Idempotent: a
    second call returns the first patch.
    """
    global _ACTIVE
    if _ACTIVE is not None:
        return _ACTIVE
    if world_size < 1:
        raise ValueError(f"canary world size must be positive, not {world_size}")
    try:
        real = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        real = 1
    os.environ["TRAINGUARD_REAL_WORLD_SIZE"] = str(real)
    if "GROUP_WORLD_SIZE" in os.environ:
        os.environ.setdefault("TRAINGUARD_REAL_GROUP_WORLD_SIZE", os.environ["GROUP_WORLD_SIZE"])
    patch = CanaryPatch(world_size, real, ["os.environ[WORLD_SIZE]"])
    patch.apply_env()
    if patch_torch:
        _patch_torch(patch)
    _ACTIVE = patch
    return patch
