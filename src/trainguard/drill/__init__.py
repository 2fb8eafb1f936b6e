"""Drills: the incident's techniques replayed on real training jobs, with harmless payloads.

Each drill runs a real small job (a tiny GPT on text shipped with the package,
2 ranks, torchrun over gloo on CPU, supervised by ``trainguard run``) with one
attack injected, then says whether it was caught, by which check, after how
many steps and with what evidence (:class:`DrillResult`). ``trainguard drill``
is the command-line shell; :data:`DRILLS` names the drills in the order they
run. Every payload only creates a marker file that the drill names, so a drill
proves that an attack *would* have run without doing any harm.

Example (listing is instant; each drill takes about ten seconds of two CPUs):
    >>> from trainguard.drill import DRILLS
    >>> DRILLS[:3]
    ('control', 'pickle-checkpoint', 'edited-torch')
    >>> from trainguard.drill import run_drills
    >>> results = run_drills(["rng-reseed"], workdir="/tmp/drills")  # doctest: +SKIP
    >>> [(r.name, r.detected, r.checks, r.steps_to_detection) for r in results]  # doctest: +SKIP
    [('rng-reseed', True, ('rng',), 0)]

The payload helpers are public too:
    >>> from pathlib import Path
    >>> import tempfile
    >>> from trainguard.drill import write_poisoned_checkpoint
    >>> d = Path(tempfile.mkdtemp())
    >>> write_poisoned_checkpoint({"w": 1}, d / "p.pt", marker=d / "ran")
    >>> (d / "ran").exists()   # writing never runs the payload
    False
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainguard.drill._result import DrillResult
from trainguard.drill.attacks import drills as _drills
from trainguard.drill.payloads import (
    loads_in_subprocess,
    marker_payload,
    write_poisoned_checkpoint,
)

if TYPE_CHECKING:
    from trainguard.drill._runner import run_drills

__all__ = [
    "DRILLS",
    "DrillResult",
    "loads_in_subprocess",
    "marker_payload",
    "run_drills",
    "write_poisoned_checkpoint",
]

#: Every drill's name, in the order ``run_drills()`` runs them.
DRILLS: tuple[str, ...] = tuple(d.name for d in _drills())


def __getattr__(name: str) -> Any:
    # The runner imports the sentinel (and with it torch): only when drills run.
    if name == "run_drills":
        from trainguard.drill._runner import run_drills

        return run_drills
    raise AttributeError(f"module 'trainguard.drill' has no attribute {name!r}")
