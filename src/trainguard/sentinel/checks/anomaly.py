"""Check 7, loss and gradient anomalies: NaN/Inf and spikes, decided on all ranks together.

Two series per rank, kept in a ring buffer on the device: the loss given to
``sentinel.observe(loss=...)`` and the global gradient norm (of the rank-local
gradients, after DDP's averaging), computed before each step. A value is

* **non-finite**: NaN or Inf (slot 0);
* **a spike**: above ``median + sigma * scale`` of the last ``window`` values, where
  ``scale = max(1.4826 * MAD, rel_floor * |median|)`` (robust to the spikes themselves;
  only upward moves count: a loss that falls fast is training). Spikes are judged
  once ``min_history`` values are in the window (slot 1).

Both verdicts are device tensors that ride the step collective, so every rank
learns of a trip on any rank at the same step, with no host sync.

Options: ``window`` (128), ``sigma`` (6.0), ``min_history`` (32), ``rel_floor`` (0.05).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainguard.errors import ConfigError
from trainguard.findings import Rule, Severity
from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip
from trainguard.sentinel.config import CheckConfig

__all__ = ["CHECK", "NON_FINITE", "SPIKE", "AnomalyCheck"]

NON_FINITE = Rule(
    "sentinel.non-finite",
    Severity.HIGH,
    "Loss or gradient norm is NaN or infinite",
    "A NaN or Inf loss or gradient poisons the optimizer state at the next step. It can be "
    "a numerical fault, corrupted data, or injected by code that edits activations or "
    "gradients; the other checks' alarms at the same step tell which.",
)
SPIKE = Rule(
    "sentinel.spike",
    Severity.MEDIUM,
    "Loss or gradient norm spiked",
    "The value is far above its robust recent range (median plus sigma times the scaled "
    "median absolute deviation). Spikes are also what flipped or scaled updates, poisoned "
    "batches and edited weights look like from the outside.",
)

_SERIES = ("loss", "grad_norm")


class AnomalyCheck(Check):
    name = "anomaly"
    rule = NON_FINITE
    defaults = CheckConfig(
        options={"window": 128, "sigma": 6.0, "min_history": 32, "rel_floor": 0.05}
    )
    slots = 2

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        super().__init__(ctx, config)
        self.window = config.integer("window", minimum=2)
        self.sigma = config.number("sigma")
        self.min_history = config.integer("min_history", minimum=2)
        self.rel_floor = config.number("rel_floor", minimum=0.0)
        if not (2 <= self.min_history <= self.window) or self.sigma <= 0 or self.rel_floor < 0:
            raise ConfigError(
                "anomaly options need 2 <= min_history <= window, sigma > 0, rel_floor >= 0"
            )
        dev = ctx.device
        self.hist = torch.zeros(2, self.window, dtype=torch.float64, device=dev)
        self.count = [0, 0]  # host counters: how many values each series has (no sync needed)
        self.pos = [0, 0]
        # Evidence of the first trip since the last read-back: [series, (value, median, scale, step)].
        self.evidence = torch.full((2, 2, 4), float("nan"), dtype=torch.float64, device=dev)
        self.first = torch.full((2, 2), -1.0, dtype=torch.float64, device=dev)
        # The newest value of each series as measured (NaN included), for telemetry: a
        # reference to the step's own 0-d tensor, so keeping it costs no kernel.
        self.last: list[torch.Tensor | None] = [None, None]

    def _grad_norm(self, state: StepState) -> torch.Tensor | None:
        grads = [g for g in (p.grad for p in self.ctx.params) if g is not None]
        if not grads:
            return None
        if self.ctx.is_dtensor:
            grads = [getattr(g, "_local_tensor", g) for g in grads]
        norms = torch._foreach_norm(grads)
        total = torch.linalg.vector_norm(torch.stack(norms).to(torch.float64))
        scale = state.step_kwargs.get("grad_scale")
        if isinstance(scale, torch.Tensor):
            total = total / scale.to(total.device, torch.float64)
        result: torch.Tensor = total.to(self.ctx.device)
        return result

    def _judge(self, state: StepState, series: int, value: torch.Tensor) -> None:
        value = value.to(torch.float64).reshape(())
        self.last[series] = value
        finite = torch.isfinite(value)
        n = self.count[series]
        filled = self.hist[series, : min(n, self.window)]
        step = float(state.step)
        if n >= self.min_history:
            median = filled.median()
            mad = (filled - median).abs().median()
            scale = torch.maximum(1.4826 * mad, self.rel_floor * median.abs()).clamp_min(1e-12)
            spike = finite & (value > median + self.sigma * scale)
        else:
            median = value.new_tensor(float("nan"))
            scale = median
            spike = torch.zeros((), dtype=torch.bool, device=value.device)
        for slot, hit in ((0, ~finite), (1, spike)):
            state.trip(self, hit, slot=slot)
            fresh = hit & (self.first[slot, series] < 0)
            record = torch.stack([value, median, scale, value.new_tensor(step)])
            self.evidence[slot, series] = torch.where(fresh, record, self.evidence[slot, series])
            self.first[slot, series] = torch.where(
                fresh, value.new_tensor(step), self.first[slot, series]
            )
        # Non-finite values do not enter the window (they would poison the median).
        keep = (
            self.hist[series, (self.pos[series] - 1) % self.window] if n else value.new_tensor(0.0)
        )
        self.hist[series, self.pos[series]] = torch.where(finite, value, keep)
        self.pos[series] = (self.pos[series] + 1) % self.window
        self.count[series] = n + 1

    def before_step(self, state: StepState) -> None:
        found_inf = state.step_kwargs.get("found_inf")
        if isinstance(found_inf, torch.Tensor):
            return  # GradScaler handles (and skips) overflowed steps itself
        if state.loss is not None:
            self._judge(state, 0, state.loss.to(self.ctx.device))
        norm = self._grad_norm(state)
        if norm is not None:
            self._judge(state, 1, norm)

    def telemetry(self) -> dict[str, float]:
        kept = [(name, t) for name, t in zip(_SERIES, self.last, strict=True) if t is not None]
        if not kept:
            return {}
        values = torch.stack([t for _, t in kept]).tolist()  # host sync: log step
        return {name: v for (name, _), v in zip(kept, values, strict=True)}

    def describe(self, trip: Trip) -> Sequence[Detection]:
        ev, first = (
            self.evidence[trip.slot].tolist(),
            self.first[trip.slot].tolist(),
        )  # host sync: read-back
        self.evidence[trip.slot].fill_(float("nan"))
        self.first[trip.slot].fill_(-1.0)
        out = []
        for series, name in enumerate(_SERIES):
            if first[series] < 0:
                continue
            value, median, scale, step = ev[series]
            if trip.slot == 0:
                msg = f"{name} is {value} (non-finite)"
            else:
                msg = f"{name} spiked to {value:.6g} (median {median:.6g}, {self.sigma:g} x scale {scale:.3g})"
            out.append(
                Detection(
                    msg,
                    {
                        "series": name,
                        "value": value,
                        "median": median,
                        "scale": scale,
                        "sigma": self.sigma,
                    },
                    step=int(step),
                    rule=NON_FINITE if trip.slot == 0 else SPIKE,
                )
            )
        return out


CHECK = AnomalyCheck
