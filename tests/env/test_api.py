"""The public surface of trainguard.env: __all__, docstring examples, rule ids."""

from __future__ import annotations

import doctest
import importlib
import inspect
import subprocess
import sys

import pytest

import trainguard.env as env
from trainguard.findings import RULES


def test_all_matches_public_names() -> None:
    for name in env.__all__:  # some load on first use; each must resolve
        assert getattr(env, name) is not None
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


def test_importing_the_package_loads_no_engine_beyond_the_recheck() -> None:
    """``env verify --baseline`` runs at every job start: importing ``trainguard.env``
    must not load the census, code verification or the full verifier."""
    code = (
        "import sys, trainguard.env as env; "
        "env.EnvConfig; env.Baseline; env.verify_environment; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('trainguard.env'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    for heavy in ("census", "code", "_verify", "_snapshot", "_anchor", "_diff"):
        assert f"trainguard.env.{heavy}" not in out
    assert "trainguard.env.baseline" in out
