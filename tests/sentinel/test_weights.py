"""Check 1: edits of parameters outside optimizer.step() are caught within one step, named."""

from __future__ import annotations

import ctypes
import threading

import pytest
import torch

from tests.sentinel._util import by_check, make_optimizer, quiet, tiny_model, train
from trainguard.sentinel import protect


def _run(attack, steps: int = 8, **kw):  # type: ignore[no-untyped-def]
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet(**kw)) as sentinel:
        train(model, opt, sentinel, steps, attack=attack)
        return sentinel.alarms, model


def _only_weights(alarms):  # type: ignore[no-untyped-def]
    found = by_check(alarms)
    assert set(found) == {"weights"}, [a.message for a in alarms]
    return found["weights"]


def test_edit_between_steps_named_at_that_step() -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 5:
            with torch.no_grad():
                model.fc2.weight[1, 2] += 1e-3

    (alarm,) = _only_weights(_run(attack)[0])
    assert alarm.step == 5 and alarm.evidence["tensors"] == ["fc2.weight"]
    assert alarm.evidence["caught"] == ["before a forward"]
    assert alarm.rule == "sentinel.weights-edited"


def test_edit_from_another_thread() -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 3:

            def edit() -> None:
                with torch.no_grad():
                    model.fc1.bias.mul_(-1)

            t = threading.Thread(target=edit)
            t.start()
            t.join()

    (alarm,) = _only_weights(_run(attack)[0])
    assert (alarm.step, alarm.evidence["tensors"]) == (3, ["fc1.bias"])


def test_swap_of_two_elements() -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 4:
            with torch.no_grad():
                w = model.fc1.weight
                a, b = w[0, 1].clone(), w[3, 2].clone()
                w[0, 1], w[3, 2] = b, a

    (alarm,) = _only_weights(_run(attack)[0])
    assert alarm.evidence["tensors"] == ["fc1.weight"]


def test_raw_pointer_write_bypassing_autograd_and_version_counters() -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 2:
            w = model.fc2.bias
            ctypes.c_float.from_address(w.data_ptr()).value = 42.0

    (alarm,) = _only_weights(_run(attack)[0])
    assert alarm.evidence["tensors"] == ["fc2.bias"]


def test_edit_between_forward_and_step_caught_before_the_step() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 3)
        x = torch.randn(4, 8)
        loss = model(x).sum()
        loss.backward()
        with torch.no_grad():
            model.fc1.weight.data[0, 0] = 7.0  # through .data: no autograd version bump
        opt.step()
        (alarm,) = _only_weights(sentinel.alarms)
    assert alarm.evidence["caught"] == ["before the optimizer step"] and alarm.step == 3


def test_sanctioned_change_is_not_an_alarm() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 3)
        with sentinel.sanctioned("weight clipping"), torch.no_grad():
            model.fc1.weight.clamp_(-0.01, 0.01)
        train(model, opt, sentinel, 3, start=3)
        assert sentinel.alarms == []


@pytest.mark.parametrize("verify", ["first", "every"])
def test_gradient_accumulation_clean(verify: str) -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet(forward_verify=verify)) as sentinel:
        for _step in range(6):
            for _micro in range(3):
                loss = model(torch.randn(4, 8)).pow(2).mean()
                sentinel.observe(loss=loss)
                loss.backward()
            opt.step()
            opt.zero_grad()
        assert sentinel.alarms == []
