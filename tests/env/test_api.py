"""The public surface of trainguard.env: __all__, docstring examples, rule ids."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import trainguard.env as env
from trainguard.findings import RULES


def test_all_matches_public_names() -> None:
    public = {
        name
        for name, obj in vars(env).items()
        if not name.startswith("_") and not inspect.ismodule(obj) and name != "annotations"
    }
    assert set(env.__all__) == public


@pytest.mark.parametrize(
    "module",
    [
        "trainguard.env",
        "trainguard.env.baseline",
        "trainguard.env.census",
        "trainguard.env.code",
        "trainguard.env.preflight",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_rules_are_namespaced() -> None:
    importlib.import_module("trainguard.env._rules")
    ours = [r for r in RULES if r.startswith(("env.", "census.", "code."))]
    assert len(ours) >= 40
    assert all(RULES[r].help for r in ours)
