"""The core: read-back cadence, veto (the step is never committed), halt, fail-closed checks."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
import torch

import trainguard
import trainguard.sentinel
from tests.sentinel._util import by_check, make_optimizer, quiet, tiny_model, train
from trainguard.errors import ConfigError
from trainguard.sentinel import Alarm, SentinelHalt, protect
from trainguard.sentinel.alarms import AlarmSpool
from trainguard.sentinel.checks import CHECK_MODULES, available_checks


def test_public_surface() -> None:
    assert sorted(trainguard.sentinel.__all__) == [
        "Action", "Alarm", "CheckConfig", "Sentinel", "SentinelConfig", "SentinelHalt", "protect",
    ]  # fmt: skip
    # The API is trainguard.protect (lazily imported by the package root, which
    # holds the sentinel back until issue 5 lands).
    assert trainguard.protect is protect
    found, _missing = available_checks()
    names = [c.name for c in found]
    assert len(set(names)) == len(names) and set(names) <= set(CHECK_MODULES)


def test_package_docstring_example_runs() -> None:
    result = doctest.testmod(trainguard.sentinel, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _edit_at(step: int):  # type: ignore[no-untyped-def]
    def attack(s, model, opt):  # type: ignore[no-untyped-def]
        if s == step:
            with torch.no_grad():
                model.fc1.weight[0, 0] += 1.0

    return attack


def test_alarms_read_back_on_log_steps_only_but_carry_the_detection_step() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    seen: list[Alarm] = []
    sentinel = protect(model, opt, on_alarm=seen.append, **quiet(log_every=10))
    train(model, opt, sentinel, 6, attack=_edit_at(3))
    assert seen == []  # detected on the device at step 3, not read back yet (no host sync)
    train(model, opt, sentinel, 4, start=6)  # step 9 is a log step
    assert [(a.check, a.step) for a in seen] == [("weights", 3)]
    sentinel.close()


def test_on_alarm_and_spool_and_close_removes_hooks() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    seen: list[Alarm] = []
    sentinel = protect(model, opt, on_alarm=seen.append, **quiet())
    train(model, opt, sentinel, 5, attack=_edit_at(2))
    sentinel.close()
    assert [a.check for a in seen] == ["weights"]
    assert sentinel.router.spool is not None
    spooled = AlarmSpool.read(sentinel.router.spool.path)
    assert [a.to_dict() for a in spooled] == [a.to_dict() for a in seen]
    assert not model._forward_pre_hooks and not opt._optimizer_step_pre_hooks
    assert not opt._optimizer_step_post_hooks
    assert all(not p._post_accumulate_grad_hooks for p in model.parameters())


def test_veto_before_step_restores_parameters_and_state() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet(checks={"weights": "veto"})) as sentinel:
        train(model, opt, sentinel, 4)
        with torch.no_grad():
            model.fc2.bias[0] += 5.0  # tampered: this step must not be committed
        edited = [p.detach().clone() for p in model.parameters()]
        state = {k: v.clone() for k, v in opt.state[model.fc1.weight].items()}
        train(model, opt, sentinel, 1, start=4)
        assert sentinel.vetoed_steps == 1
        for p, before in zip(model.parameters(), edited, strict=True):
            assert torch.equal(p, before)  # no update landed
        for k, v in opt.state[model.fc1.weight].items():
            assert torch.equal(v, state[k])
        (alarm,) = sentinel.alarms
        assert alarm.action == "veto" and alarm.step == 4
        train(
            model, opt, sentinel, 3, start=5
        )  # training resumes; no second alarm for the same edit
        assert sentinel.vetoed_steps == 1 and len(sentinel.alarms) == 1


def test_veto_after_step_rolls_the_update_back() -> None:
    model = tiny_model()
    opt = make_optimizer(model, "sgd")

    def negate_lr(o: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for g in o.param_groups:
            g["lr"] = -abs(g["lr"])

    with protect(model, opt, **quiet(checks={"updates": "veto"})) as sentinel:
        train(model, opt, sentinel, 3)
        before = [p.detach().clone() for p in model.parameters()]
        buf = opt.state[model.fc1.weight]["momentum_buffer"].clone()
        handle = opt.register_step_pre_hook(negate_lr)
        train(model, opt, sentinel, 1, start=3)
        handle.remove()
        for p, b in zip(model.parameters(), before, strict=True):
            assert torch.equal(p, b)
        assert torch.equal(opt.state[model.fc1.weight]["momentum_buffer"], buf)
        assert opt.param_groups[0]["lr"] > 0  # the hyper-parameters are restored too
        alarms = [
            a for a in by_check(sentinel.alarms)["updates"] if a.rule == "sentinel.update-mismatch"
        ]
        assert alarms[0].action == "veto" and alarms[0].evidence["verdict"] == "sign flipped"
        assert sentinel.vetoed_steps == 1


def test_halt_raises_on_the_step() -> None:
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet(checks={"weights": "halt"})) as sentinel:
        train(model, opt, sentinel, 3)
        with torch.no_grad():
            model.fc1.bias.zero_()
        with pytest.raises(SentinelHalt) as info:
            train(model, opt, sentinel, 1, start=3)
    assert info.value.alarms[0].check == "weights"
    assert "weights" in info.value.diagnostics()


def test_a_failing_check_is_reported_and_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainguard.sentinel.checks.anomaly import AnomalyCheck

    def boom(self: Any, state: Any) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr(AnomalyCheck, "before_step", boom)
    model = tiny_model()
    opt = make_optimizer(model)
    with protect(model, opt, **quiet()) as sentinel:
        train(model, opt, sentinel, 3)
        (alarm,) = sentinel.alarms
        assert alarm.rule == "sentinel.check-failed" and "kaput" in alarm.message
        assert "anomaly" in sentinel.skipped and all(c.name != "anomaly" for c in sentinel.checks)


def test_unknown_check_name_is_a_config_error() -> None:
    model = tiny_model()
    with pytest.raises(ConfigError):
        protect(model, make_optimizer(model), checks={"wieghts": "veto"})


_CLEAN_RUN = """
import json, sys, torch
from tests.sentinel._util import make_optimizer, tiny_model, train
from trainguard.sentinel import protect

model = tiny_model()
opt = make_optimizer(model)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
with protect(model, opt, spool_dir=sys.argv[1], console=False) as sentinel:
    train(model, opt, sentinel, 300, scheduler=sched)
    print(json.dumps({"step": sentinel.step, "alarms": [a.line() for a in sentinel.alarms]}))
"""


@pytest.mark.slow
def test_clean_run_with_all_defaults_raises_nothing(tmp_path: Any) -> None:
    # A fresh interpreter, as a real job has: pytest's own process has every test module
    # loaded, attack code included, which the scale check rightly reports.
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _CLEAN_RUN, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"step": 300, "alarms": []}


def test_alarms_go_to_the_ledger_of_the_recorded_run(tmp_path: Any) -> None:
    from trainguard.ledger import Ledger
    from trainguard.ledger.capture import RunRecorder

    url = f"sqlite:///{tmp_path}/ledger.db"
    with RunRecorder.start(url, run_id="run-7"):
        model = tiny_model()
        opt = make_optimizer(model)
        with protect(model, opt, **quiet()) as sentinel:
            train(model, opt, sentinel, 5, attack=_edit_at(3))
    ledger = Ledger.open(url)
    alerts = [
        e.record for e in ledger.entries(0, ledger.size()) if type(e.record).__name__ == "Alert"
    ]
    assert [(a.run_id, a.rule, a.step) for a in alerts] == [("run-7", "sentinel.weights-edited", 3)]  # type: ignore[attr-defined]
    assert alerts[0].evidence["tensors"] == ["fc1.weight"]  # type: ignore[attr-defined]


def test_log_steps_write_each_ranks_metrics_to_the_ledger(tmp_path: Any) -> None:
    # What the dashboard charts: loss, gradient norm and step time at every log step.
    from trainguard.ledger import Ledger, StepMetrics
    from trainguard.ledger.capture import RunRecorder

    url = f"sqlite:///{tmp_path}/ledger.db"
    with RunRecorder.start(url, run_id="run-8"):
        model = tiny_model()
        opt = make_optimizer(model)
        with protect(model, opt, **quiet(log_every=4)) as sentinel:
            losses = train(model, opt, sentinel, 12)
    ledger = Ledger.open(url)
    metrics = [
        e.record for e in ledger.entries(0, ledger.size()) if isinstance(e.record, StepMetrics)
    ]
    assert [(m.run_id, m.step, m.rank) for m in metrics] == [("run-8", s, 0) for s in (3, 7, 11)]
    last = metrics[-1].floats()
    assert last["loss"] == pytest.approx(float(losses[11]))
    assert last["grad_norm"] > 0 and last["step_time"] > 0
