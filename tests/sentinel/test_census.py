"""Check 4: hooks, modes, kernels and replaced functions that appear during training."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.sentinel._util import by_check, make_optimizer, quiet, tiny_model, train
from trainguard.sentinel import protect


def _alarms(attack, steps: int = 7, **kw: Any):  # type: ignore[no-untyped-def]
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet(**kw)) as sentinel:
        train(model, opt, sentinel, steps, attack=attack)
        return by_check(sentinel.alarms)


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    handles: list[Any] = []
    yield handles
    for h in handles:
        h.remove() if hasattr(h, "remove") else h()


def test_global_forward_hook(cleanup: list[Any]) -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 4:
            cleanup.append(
                torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
            )

    (alarm,) = _alarms(attack)["census"]
    assert alarm.step == 4 and alarm.rule == "sentinel.hook-installed"
    assert alarm.evidence["registry"] == "torch.nn.modules.module._global_forward_hooks"
    assert "test_census.py" in alarm.evidence["hook"]["where"]


def test_torch_function_mode_pushed(cleanup: list[Any]) -> None:
    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            return func(*args, **(kwargs or {}))

    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 3:
            mode = Spy()
            mode.__enter__()
            cleanup.append(lambda: mode.__exit__(None, None, None))

    (alarm,) = _alarms(attack)["census"]
    assert alarm.step == 3 and alarm.evidence["modes"] == [
        "function:test_torch_function_mode_pushed.<locals>.Spy"
    ]
    assert "test_census.py" in alarm.evidence["handlers"][0]["where"]


def test_python_kernel_over_aten_add(cleanup: list[Any]) -> None:
    libs: list[torch.library.Library] = []

    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 5:
            lib = torch.library.Library("aten", "IMPL")
            keyset = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)

            def evil_add(a, b, alpha=1):  # type: ignore[no-untyped-def]
                with torch._C._ExcludeDispatchKeyGuard(keyset):
                    return torch.ops.aten.sub.Tensor(a, b, alpha=alpha)

            with pytest.warns(UserWarning):
                lib.impl("add.Tensor", evil_add, "CPU")
            libs.append(lib)

    try:
        found = _alarms(attack)["census"]
    finally:
        for lib in libs:
            lib._destroy()
    ops = [a for a in found if a.evidence.get("op") == "aten::add.Tensor"]
    assert ops and ops[0].step == 5 and ops[0].rule == "sentinel.override-installed"
    assert any("test_census.py" in line for line in ops[0].evidence["added"])


def test_tensor_hook_flipping_gradients(cleanup: list[Any]) -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 3:
            cleanup.append(model.fc2.weight.register_hook(lambda g: -g))

    found = _alarms(attack)
    alarm = found["census"][0]
    assert alarm.step == 3 and alarm.evidence["registry"] == "fc2.weight._backward_hooks"


def test_ddp_style_comm_hook_and_module_hook(cleanup: list[Any]) -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 2:
            cleanup.append(model.fc1.register_forward_hook(lambda m, i, o: o * 1.0))

    (alarm,) = _alarms(attack)["census"]
    assert alarm.evidence["registry"] == "Linear._forward_hooks" and alarm.step == 2


def test_sentinel_hook_removed_is_reported() -> None:
    def attack(step, model, opt):  # type: ignore[no-untyped-def]
        if step == 3:
            model._forward_pre_hooks.clear()  # silences the weight check's pre-forward phase

    found = _alarms(attack)
    tampered = [a for a in found["census"] if a.rule == "sentinel.sentinel-tampered"]
    assert tampered and tampered[0].step == 3


def test_optimizer_step_replaced_without_hooks_is_unobserved() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 3)
        raw = type(opt).step.__wrapped__  # the unhooked function: no sentinel hook runs

        opt.step = lambda *a, **k: raw(opt, *a, **k)  # type: ignore[method-assign]
        train(model, opt, sentinel, 80, start=3)
        alarms = sentinel.alarms
    unobserved = [a for a in alarms if a.rule == "sentinel.steps-unobserved"]
    assert unobserved and unobserved[0].step == 3


def test_clean_run_with_env_census_is_quiet() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet(env=True)) as sentinel:
        train(model, opt, sentinel, 5)
        assert sentinel.alarms == []


def test_a_hook_prepended_after_a_removal_is_still_seen() -> None:
    # The full census skips registries whose (len, first, last) signature is unchanged
    # since they were last found clean; a removal plus a prepended hook keeps the length.
    model = tiny_model()
    opt = make_optimizer(model)
    keep = model.register_forward_hook(lambda m, i, o: None)
    drop = model.register_forward_hook(lambda m, i, o: None)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 2)
        drop.remove()
        model.register_forward_hook(lambda m, i, o: None, prepend=True)
        train(model, opt, sentinel, 1, start=2)
        hits = [a for a in sentinel.alarms if a.check == "census"]
    keep.remove()
    assert hits and all(a.step == 2 for a in hits)
    assert any("_forward_hooks" in a.message for a in hits)
