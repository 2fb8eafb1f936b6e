"""Check 2: the optimizer applied the update its reference says, at secret coordinates."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.sentinel._util import by_check, make_optimizer, quiet, tiny_model, train
from trainguard.sentinel import protect

VARIANTS = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.0}),
    ("sgd", {"nesterov": True, "weight_decay": 1e-2}),
    ("sgd", {"dampening": 0.1, "maximize": True, "foreach": False}),
    ("adam", {}),
    ("adam", {"amsgrad": True, "weight_decay": 1e-2, "foreach": False}),
    ("adam", {"fused": True, "maximize": True}),
    ("adam", {"decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("adamw", {}),
    ("adamw", {"amsgrad": True, "fused": True}),
    ("adamw", {"foreach": False, "betas": (0.8, 0.95), "eps": 1e-6}),
]


@pytest.mark.parametrize(("name", "kw"), VARIANTS)
def test_reference_matches_every_variant(name: str, kw: dict[str, Any]) -> None:
    model = tiny_model()
    opt = make_optimizer(model, name, **kw)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 40)
        alarms = sentinel.alarms
    if kw.get("maximize"):
        # Maximising the loss makes it explode, which the anomaly check rightly reports.
        alarms = [a for a in alarms if a.check != "anomaly"]
    assert alarms == []


def _updates_alarms(attack, name: str = "adamw", steps: int = 8) -> list[Any]:  # type: ignore[no-untyped-def]
    model = tiny_model()
    opt = make_optimizer(model, name)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, steps, attack=attack)
        return sentinel.alarms


def _lr_hook(factor: float):  # type: ignore[no-untyped-def]
    """An attack: per-instance hooks that change lr for the step only, then restore it."""

    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step != 5:
            return
        saved: list[float] = []

        def pre(o, args, kwargs):  # type: ignore[no-untyped-def]
            saved[:] = [g["lr"] for g in o.param_groups]
            for g in o.param_groups:
                g["lr"] = g["lr"] * factor

        def post(o, args, kwargs):  # type: ignore[no-untyped-def]
            for g, lr in zip(o.param_groups, saved, strict=True):
                g["lr"] = lr

        opt.register_step_pre_hook(pre)
        opt.register_step_post_hook(post)

    return attack


@pytest.mark.parametrize(
    ("name", "factor", "verdict"),
    [
        ("adamw", -1.0, "sign flipped"),
        ("sgd", 0.0, "skipped"),
        ("adam", 3.0, "scaled by 3"),
        ("sgd", 0.5, "scaled by 0.5"),
    ],
)
def test_flipped_skipped_scaled_updates(name: str, factor: float, verdict: str) -> None:
    found = by_check(_updates_alarms(_lr_hook(factor), name))
    mismatch = [a for a in found["updates"] if a.rule == "sentinel.update-mismatch"]
    assert mismatch and mismatch[0].step == 5
    assert mismatch[0].evidence["verdict"] == verdict
    assert set(mismatch[0].evidence["tensors"]) == {
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }
    if factor == -1.0:
        assert all(1.9 < s < 2.1 for s in mismatch[0].evidence["scores"].values())
    assert found["census"][0].step == 5  # and the hooks themselves are named


def test_monkey_patched_step_flipping_gradients() -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 4:
            original = opt.step

            def step_fn(*a: Any, **k: Any) -> Any:
                for p in model.parameters():
                    p.grad.neg_()
                return original(*a, **k)

            opt.step = step_fn

    found = by_check(_updates_alarms(attack))
    grads = [a for a in found["updates"] if a.rule == "sentinel.grads-rewritten"]
    assert grads[0].step == 4 and "fc1.weight" in grads[0].evidence["tensors"]
    assert any(a.rule == "sentinel.override-installed" and a.step == 4 for a in found["census"])


def test_monkey_patched_step_flipping_the_update_after_the_fact() -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 4:
            original = opt.step

            def step_fn(*a: Any, **k: Any) -> Any:
                before = [p.detach().clone() for p in model.parameters()]
                out = original(*a, **k)
                with torch.no_grad():
                    for p, b in zip(model.parameters(), before, strict=True):
                        p.copy_(2 * b - p)
                return out

            opt.step = step_fn

    found = by_check(_updates_alarms(attack))
    # The flip lands after the step's own post-hook, so the weight window sees it before the
    # next forward: within one step.
    assert found["weights"][0].step == 5
    assert set(found["weights"][0].evidence["tensors"]) == {
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }


def test_global_optimizer_hook_flipping_updates() -> None:
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    handles = []

    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 5:
            saved: list[torch.Tensor] = []

            def pre(o, args, kwargs):  # type: ignore[no-untyped-def]
                saved[:] = [p.detach().clone() for p in model.parameters()]

            def post(o, args, kwargs):  # type: ignore[no-untyped-def]
                with torch.no_grad():
                    for p, b in zip(model.parameters(), saved, strict=True):
                        p.copy_(2 * b - p)

            handles.extend(
                [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
            )

    try:
        found = by_check(_updates_alarms(attack))
    finally:
        for h in handles:
            h.remove()
    hooks = [a for a in found["census"] if a.rule == "sentinel.hook-installed"]
    assert {a.evidence["registry"] for a in hooks} == {
        "torch.optim.optimizer._global_optimizer_pre_hooks",
        "torch.optim.optimizer._global_optimizer_post_hooks",
    }
    assert hooks[0].step == 5
    assert found["weights"][0].step == 6  # the flipped parameters, before the next forward


def test_lr_changed_behind_the_schedulers_back() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 5:
            opt.param_groups[0]["lr"] *= 10

    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 8, attack=attack, scheduler=sched)
        (alarm,) = sentinel.alarms
    assert alarm.rule == "sentinel.lr-tampered" and alarm.step == 5
    assert alarm.evidence["lr"] == pytest.approx(10 * alarm.evidence["scheduler_lr"][0])


def test_scheduler_changes_are_not_alarms() -> None:
    model = tiny_model()
    opt = make_optimizer(model, "sgd")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=40)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 39, scheduler=sched)
        assert sentinel.alarms == []


def test_unknown_optimizer_falls_back_to_descent_direction() -> None:
    model = tiny_model()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 30)
        assert sentinel.alarms == []
        for g in opt.param_groups:
            g["lr"] = -g["lr"]  # ascend (the census cannot see this; the direction check does)
        train(model, opt, sentinel, 12, start=30)
        alarms = [a for a in sentinel.alarms if a.check == "updates"]
    assert alarms and alarms[0].rule == "sentinel.update-ascent"
    assert 30 <= alarms[0].step <= 42


def test_coordinates_are_fresh_every_step() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet()) as sentinel:
        check = next(c for c in sentinel.checks if c.name == "updates")
        seen = []
        for step in range(3):
            seen.append(check.idx.clone())  # type: ignore[attr-defined]
            train(model, opt, sentinel, 1, start=step)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_step_with_closure_is_verified_after_the_closure() -> None:
    from tests.sentinel._util import batch

    model = tiny_model()
    opt = make_optimizer(model, "sgd")
    with protect(model, opt, **quiet()) as sentinel:
        for step in range(8):

            def closure(step: int = step) -> torch.Tensor:
                x, y = batch(step)
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                if step == 6:
                    for p in model.parameters():
                        p.grad.mul_(-1)  # inside the closure: still before the update
                return loss

            opt.step(closure)
        alarms = sentinel.alarms
    anomaly = next(c for c in sentinel.checks if c.name == "anomaly")
    assert anomaly.count[0] == 8  # type: ignore[attr-defined]  # the closure's loss was observed
    flips = [a for a in alarms if a.rule == "sentinel.grads-rewritten"]
    assert [a.step for a in flips] == [6]
    assert [a for a in alarms if a.rule == "sentinel.update-mismatch"] == []
