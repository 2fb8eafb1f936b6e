"""The drills' attacks: one module each, in a fixed order (see :mod:`._base` for the contract).

:data:`ATTACK_MODULES` is the explicit ordered registry; :func:`drills` reads
and validates every module, :func:`get` one by name.
"""

from __future__ import annotations

import importlib
from functools import cache

from trainguard.drill.attacks._base import Drill, DrillContext, JobContext, Outcome
from trainguard.errors import UsageError

__all__ = ["ATTACK_MODULES", "Drill", "DrillContext", "JobContext", "Outcome", "drills", "get"]

#: Attack modules in the order drills run: the clean control first, then the
#: incident's techniques in the order the issue lists them.
ATTACK_MODULES: tuple[str, ...] = (
    "control",
    "pickle_checkpoint",
    "edited_torch",
    "signflip_patch",
    "signflip_hook",
    "lr_behind_scheduler",
    "weights_thread",
    "checkpoint_edit",
    "rng_reseed",
    "sleep_rank",
    "kill_rank",
    "scale_trigger",
    "pth_backdoor",
)


@cache
def drills() -> tuple[Drill, ...]:
    """Every drill, in registry order (modules are imported and validated once)."""
    out = []
    for module_name in ATTACK_MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        out.append(Drill.from_module(module))
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate drill names in {names}")
    return tuple(out)


def get(name: str) -> Drill:
    """The drill called ``name``; a :class:`~trainguard.errors.UsageError` if there is none."""
    for drill in drills():
        if drill.name == name:
            return drill
    raise UsageError(
        f"no drill called {name!r}",
        expected=f"one of {', '.join(d.name for d in drills())}",
        hint="`trainguard drill --list` shows them",
    )
