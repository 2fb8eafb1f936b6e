"""Sentinel checks: one module per check, each exporting a :class:`Check` subclass as ``CHECK``.

The registry is an explicit ordered list of module names (:data:`CHECK_MODULES`);
the order is the order in which phases run within a hook. A module that is listed
but not installed (a check still being written) is reported by
:func:`available_checks` in its ``missing`` list, never skipped silently.
"""

from __future__ import annotations

import importlib

from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip

__all__ = [
    "CHECK_MODULES",
    "Check",
    "Detection",
    "SentinelContext",
    "StepState",
    "Trip",
    "available_checks",
]

#: Check modules in phase order. Weights first: it computes the step's fingerprints
#: that replicas reuses; census before updates so a hook found this step is named first.
CHECK_MODULES: tuple[str, ...] = (
    "weights",
    "census",
    "rng",
    "anomaly",
    "updates",
    "replicas",
    "stragglers",
    "audit",
    "scale",
)


def available_checks() -> tuple[list[type[Check]], list[str]]:
    """The check classes that import, in order, and the listed modules that do not exist."""
    found: list[type[Check]] = []
    missing: list[str] = []
    for module_name in CHECK_MODULES:
        qualified = f"{__name__}.{module_name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise  # the module exists but one of its imports is missing: a real error
            missing.append(module_name)
            continue
        check = getattr(module, "CHECK", None)
        if not (isinstance(check, type) and issubclass(check, Check)):
            raise TypeError(f"{qualified} does not export a Check subclass as CHECK")
        found.append(check)
    return found, missing
