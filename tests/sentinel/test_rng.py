"""Check 3: reseeding and rewinding of random generators during training."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.utils.checkpoint

from tests.sentinel._util import by_check, make_optimizer, quiet, tiny_model, train
from trainguard.sentinel import protect


def _rng_alarms(attack, steps: int = 8):  # type: ignore[no-untyped-def]
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, steps, attack=attack)
        return by_check(sentinel.alarms)


def _at(step: int, fn: Callable[[], object]):  # type: ignore[no-untyped-def]
    def attack(s, model, opt):  # type: ignore[no-untyped-def]
        if s == step:
            fn()

    return attack


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        (lambda: torch.manual_seed(1234), "torch.manual_seed"),
        (lambda: random.seed(5), "random.seed"),
        (lambda: np.random.seed(6), "numpy.random.seed"),
        (lambda: torch.set_rng_state(torch.get_rng_state()), "torch.set_rng_state"),
    ],
)
def test_seed_calls_reported_with_the_callers_stack(fn: Callable[[], object], name: str) -> None:
    found = _rng_alarms(_at(5, fn))
    assert set(found) == {"rng"}
    (alarm,) = found["rng"]
    assert alarm.rule == "sentinel.rng-reseeded" and alarm.step == 5
    assert alarm.evidence["function"] == name
    assert any("test_rng.py" in frame for frame in alarm.evidence["stack"])


def test_reseed_with_the_same_seed_bypassing_the_wrappers() -> None:
    seed = torch.initial_seed()
    found = _rng_alarms(_at(5, lambda: torch.default_generator.manual_seed(seed)))
    (alarm,) = found["rng"]
    assert alarm.step == 5 and "fresh state" in alarm.message


def test_reseed_with_another_seed_bypassing_the_wrappers() -> None:
    found = _rng_alarms(_at(4, lambda: torch.default_generator.manual_seed(99)))
    (alarm,) = found["rng"]
    assert alarm.step == 4 and alarm.evidence["after"] == 99


def test_rewind_of_generator_state() -> None:
    saved: dict[str, torch.Tensor] = {}

    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 3:
            saved["state"] = torch.default_generator.get_state()
        if step == 6:
            torch.default_generator.set_state(saved["state"])  # bypasses the wrappers

    (alarm,) = _rng_alarms(attack)["rng"]
    assert alarm.rule == "sentinel.rng-rewound" and alarm.step == 6
    assert alarm.evidence["state_seen_at_step"] in (2, 3)


def test_python_random_rewind() -> None:
    saved: list[object] = []

    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        random.random()  # the data pipeline draws from Python's RNG every step
        if step == 2:
            saved.append(random.getstate())
        if step == 5:
            random._inst.setstate(saved[0])  # type: ignore[attr-defined]

    (alarm,) = _rng_alarms(attack)["rng"]
    assert alarm.evidence["generator"] == "python" and alarm.step == 5


def test_seeding_before_training_and_checkpointing_are_not_alarms() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet()) as sentinel:
        torch.manual_seed(0)  # set-up: before the first step
        random.seed(0)
        for step in range(10):
            x = torch.randn(8, 8)
            # Activation checkpointing saves and restores RNG state through torch.random.fork_rng.
            h = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=False)
            loss = h.pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            del step
        assert sentinel.alarms == []


def test_wrappers_removed_on_close() -> None:
    original = torch.manual_seed
    model = tiny_model()
    sentinel = protect(model, make_optimizer(model), **quiet())
    assert torch.manual_seed is not original
    sentinel.close()
    assert torch.manual_seed is original


def test_cross_rank_equality_single_process_is_quiet() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(
        model, opt, **quiet(checks={"rng": {"equal_across_ranks": ["torch"]}})
    ) as sentinel:
        train(model, opt, sentinel, 3)
        assert sentinel.alarms == []
