"""trainguard sentinel: catch tampering inside a running training job within a step.

``protect(model, optimizer)`` installs optimizer step pre/post hooks and a module
forward pre-hook; the checks then run on the device at every step and combine
their verdicts across ranks with one ``all_reduce`` before ``optimizer.step()``
commits anything. Checks (one module each in :mod:`trainguard.sentinel.checks`):
weights integrity between steps, update verification against a reference
optimizer on secretly sampled coordinates, RNG integrity, a runtime census of
hooks/modes/overrides, cross-replica consistency, loss/gradient anomalies (and,
from their own modules, stragglers/sleeps, an audit hook and scale triggers).

Example (runs as a doctest on CPU in well under a second):
    >>> import torch
    >>> from trainguard.sentinel import protect
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> import tempfile; spool = tempfile.mkdtemp()
    >>> with protect(model, opt, spool_dir=spool, console=False) as sentinel:
    ...     for _ in range(3):
    ...         loss = model(torch.randn(8, 4)).pow(2).mean()
    ...         sentinel.observe(loss=loss)
    ...         loss.backward(); opt.step(); opt.zero_grad()
    ...     with torch.no_grad():
    ...         model.weight[0, 0] += 1.0          # an edit outside the optimizer
    ...     _ = model(torch.randn(8, 4))           # verified before this forward
    ...     [(a.step, a.evidence["tensors"]) for a in sentinel.alarms if a.check == "weights"]
    [(3, ['weight'])]
"""

from __future__ import annotations

from trainguard.sentinel._core import Sentinel, SentinelHalt
from trainguard.sentinel._protect import protect
from trainguard.sentinel.alarms import Alarm
from trainguard.sentinel.config import Action, CheckConfig, SentinelConfig

__all__ = [
    "Action",
    "Alarm",
    "CheckConfig",
    "Sentinel",
    "SentinelConfig",
    "SentinelHalt",
    "protect",
]
