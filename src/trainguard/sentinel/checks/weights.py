"""Check 1, weight integrity window: parameters change only inside ``optimizer.step()``.

After every step the parameters are fingerprinted on the device (keyed and
order-sensitive, see :mod:`trainguard.sentinel._fingerprint`); before the next
training forward and again before the next step they are fingerprinted again and
compared. Any difference is a change made outside the optimizer: an edit from a
hook, from another thread, through ``.data`` or a raw pointer, a swapped tensor.
The alarm names every tensor that changed and where it was caught.

Cost: one matrix-vector pass over the parameters at each of the three points
(shared with the replicas check before the step). No host sync.

Options: none. Legitimate edits go in ``with sentinel.sanctioned("why"):``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainguard.findings import Rule, Severity
from trainguard.sentinel.checks._base import Check, Detection, StepState, Trip
from trainguard.sentinel.config import CheckConfig

__all__ = ["CHECK", "WEIGHTS_EDITED", "WeightsCheck"]

WEIGHTS_EDITED = Rule(
    "sentinel.weights-edited",
    Severity.CRITICAL,
    "Parameters changed outside the optimizer step",
    "A parameter's fingerprint changed between the end of one optimizer step and the next "
    "forward or step. Only the optimizer should write parameters during training; an edit "
    "from a hook, another thread or a raw pointer makes results unreproducible or sabotages "
    "the run. Find the code that wrote the tensor (census and audit alarms often name it).",
)

_PHASES = ("before a forward", "before the optimizer step")


class WeightsCheck(Check):
    name = "weights"
    rule = WEIGHTS_EDITED
    defaults = CheckConfig()

    def __init__(self, ctx, config):  # type: ignore[no-untyped-def]
        super().__init__(ctx, config)
        n = len(ctx.params)
        self.reference: torch.Tensor | None = None
        self.first = torch.full((n,), -1, dtype=torch.int64, device=ctx.device)
        self.where = torch.zeros(n, dtype=torch.int64, device=ctx.device)

    def _verify(self, state: StepState, phase: int) -> None:
        current = state.fingerprints()
        if self.reference is None:
            self.reference = current  # the baseline: the first forward or step after protect()
            return
        changed = current != self.reference
        fresh = changed & (self.first < 0)
        self.first = torch.where(fresh, torch.full_like(self.first, state.step), self.first)
        self.where = torch.where(fresh, torch.full_like(self.where, phase), self.where)
        state.trip(self, changed.any())
        self.reference = current  # one alarm per edit, not one per phase

    def on_forward(self, state: StepState) -> None:
        self._verify(state, 0)

    def before_step(self, state: StepState) -> None:
        self._verify(state, 1)

    def after_step(self, state: StepState) -> None:
        self.reference = state.fingerprints()

    def rebaseline(self, state: StepState) -> None:
        self.reference = state.fingerprints()

    def describe(self, trip: Trip) -> Sequence[Detection]:
        first, where = self.first.tolist(), self.where.tolist()  # host sync: read-back only
        self.first.fill_(-1)
        hit = [i for i, s in enumerate(first) if s >= 0]
        if not hit:
            return []
        names = [self.ctx.names[i] for i in hit]
        caught = sorted({_PHASES[where[i]] for i in hit})
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return [
            Detection(
                f"{len(names)} parameter tensor(s) changed outside optimizer.step(): {shown}",
                {
                    "tensors": names,
                    "caught": caught,
                    "first_step": min(first[i] for i in hit),
                    "shapes": {self.ctx.names[i]: list(self.ctx.params[i].shape) for i in hit[:20]},
                },
                step=min(first[i] for i in hit),
            )
        ]


CHECK = WeightsCheck
