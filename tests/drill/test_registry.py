"""The drill registry: every attack module has the contract's shape, in a fixed order."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from trainguard.drill import DRILLS
from trainguard.drill.attacks import ATTACK_MODULES, Drill, drills, get
from trainguard.errors import ConfigError, UsageError

#: The issue's attacks, each replayed by one drill (and the clean control first).
ISSUE_DRILLS = (
    "control",
    "pickle-checkpoint",
    "edited-torch",
    "signflip-patch",
    "signflip-hook",
    "lr-behind-scheduler",
    "weights-thread",
    "checkpoint-edit",
    "rng-reseed",
    "sleep-rank",
    "kill-rank",
    "scale-trigger",
    "pth-backdoor",
)


def test_drills_are_the_issues_in_a_fixed_order() -> None:
    assert DRILLS == ISSUE_DRILLS
    assert [d.name for d in drills()] == list(DRILLS)
    assert len(ATTACK_MODULES) == len(DRILLS)


def test_every_drill_says_what_it_replays_and_what_catches_it() -> None:
    for d in drills():
        assert d.title and d.incident
        assert 0 <= d.attack_step < d.steps
        if d.control:
            assert d.expected_checks == ()
        else:
            assert d.expected_checks, d.name
            assert callable(getattr(d.module, "inject", None)) or callable(
                getattr(d.module, "prepare", None)
            ), f"{d.name} neither prepares nor injects anything"


def test_bounds_follow_the_issue() -> None:
    # Checks 1-4 (weights, updates, rng, census) catch within one step; sleeps within 20.
    for d in drills():
        if set(d.expected_checks) & {"weights", "updates", "rng", "census"}:
            assert d.bound <= 1, d.name
    assert get("sleep-rank").bound == 20


def test_unknown_drill_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no drill called 'nope'"):
        get("nope")


def _module(**attrs: object) -> types.ModuleType:
    module = types.ModuleType("tests.drill.fake_attack")
    module.__dict__.update(attrs)
    return module


def test_a_malformed_attack_module_is_rejected_when_read() -> None:
    base = {"NAME": "x-y", "TITLE": "t", "INCIDENT": "i", "EXPECTED_CHECKS": ("rng",)}
    assert Drill.from_module(_module(**base)).name == "x-y"
    with pytest.raises(ConfigError, match="lacks TITLE"):
        Drill.from_module(_module(NAME="x", INCIDENT="i"))
    with pytest.raises(ConfigError, match="EXPECTED_CHECKS"):
        Drill.from_module(_module(**{**base, "EXPECTED_CHECKS": ()}))
    with pytest.raises(ConfigError, match="NAME"):
        Drill.from_module(_module(**{**base, "NAME": "Bad Name"}))
    with pytest.raises(ConfigError, match="PROLOG"):
        Drill.from_module(_module(**base, PROLOG="maybe"))
    with pytest.raises(ConfigError, match="ATTACK_STEP"):
        Drill.from_module(_module(**base, STEPS=4, ATTACK_STEP=4))


def test_listing_drills_does_not_import_torch() -> None:
    code = "import sys, trainguard.drill as d; print(len(d.DRILLS), 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(len(DRILLS)), "False"]
