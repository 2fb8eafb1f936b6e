"""Undoing an optimizer step: the mechanism behind the ``veto`` action.

A snapshot holds copies of the parameters' local data and of every tensor in
the optimizer state (and which parameters had no state yet), so that
:meth:`StepSnapshot.restore` puts the job back exactly where it was before
``optimizer.step()``: the vetoed update is never visible to the next forward.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

__all__ = ["StepSnapshot"]


class StepSnapshot:
    """Copies of parameters and optimizer state, taken before a step."""

    def __init__(self, params: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._targets = params
        self._params = [p.detach().clone() for p in params]
        self._state: dict[int, dict[str, Any] | None] = {}
        self._groups = [
            {k: copy.copy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ]
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                self._state[id(p)] = (
                    None
                    if not st
                    else {
                        k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                        for k, v in st.items()
                    }
                )

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._targets, self._params)
            for group, saved in zip(self.optimizer.param_groups, self._groups, strict=True):
                group.update(saved)
                for p in group["params"]:
                    before = self._state.get(id(p))
                    if before is None:
                        self.optimizer.state.pop(p, None)
                        continue
                    current = self.optimizer.state[p]
                    for k, v in before.items():
                        cur = current.get(k)
                        if (
                            isinstance(v, torch.Tensor)
                            and isinstance(cur, torch.Tensor)
                            and cur.shape == v.shape
                        ):
                            cur.copy_(v)
                        else:
                            current[k] = v
