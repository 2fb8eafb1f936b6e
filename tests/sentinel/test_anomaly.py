"""Check 7: NaN/Inf and spikes in loss and gradient norm."""

from __future__ import annotations

import torch

from tests.sentinel._util import batch, make_optimizer, quiet, tiny_model
from trainguard.sentinel import protect


def _loop(n: int, poison):  # type: ignore[no-untyped-def]
    model = tiny_model()
    opt = make_optimizer(model, "sgd", lr=0.01)
    with protect(model, opt, **quiet()) as sentinel:
        for step in range(n):
            x, y = batch(step)
            loss = torch.nn.functional.cross_entropy(model(x), y) * poison(step)
            sentinel.observe(loss=loss)
            loss.backward()
            opt.step()
            opt.zero_grad()
        return sentinel.alarms


def test_nan_loss_detected_at_its_step() -> None:
    alarms = _loop(12, lambda s: float("nan") if s == 7 else 1.0)
    nan = [a for a in alarms if a.rule == "sentinel.non-finite"]
    assert min(a.step for a in nan) == 7  # nothing before the poisoned step
    assert {a.evidence["series"] for a in nan if a.step == 7} == {"loss", "grad_norm"}


def test_gradient_spike_detected() -> None:
    alarms = _loop(60, lambda s: 1000.0 if s == 50 else 1.0)
    spikes = [a for a in alarms if a.rule == "sentinel.spike"]
    assert spikes and min(a.step for a in spikes) == 50
    assert {a.evidence["series"] for a in spikes if a.step == 50} == {"loss", "grad_norm"}
    assert spikes[0].evidence["value"] > spikes[0].evidence["median"]


def test_falling_loss_is_not_a_spike() -> None:
    assert _loop(80, lambda s: 10.0 if s < 40 else 1.0) == []
