"""Fixtures: demo wheels, venvs built from them, and a torch venv (slow tests only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.env._envcraft import copy_venv, demo_wheels, make_venv, pip_install
from trainguard.env._envvars import VARIABLES

TORCH_WHEEL_DIR = Path("/opt/wheels")
TORCH_REQ = "torch==2.13.0"


@pytest.fixture(autouse=True)
def _no_load_changing_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide which load-changing variables are set; the CI's own are removed."""
    for name in [*VARIABLES, "PYTHONWARNINGS"]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_wheels(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    venv = tmp_path_factory.mktemp("demo-template") / "venv"
    python = make_venv(venv)
    pip_install(python, wheelhouse, "tgdemo", "tgother")
    return venv


@pytest.fixture
def demo_venv(tmp_path: Path, demo_template: Path) -> Path:
    """A fresh copy of a venv with tgdemo and tgother installed by pip; tamper freely."""
    copy_venv(demo_template, tmp_path / "venv")
    return tmp_path / "venv"


@pytest.fixture(scope="session")
def torch_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv with only torch 2.13.0 installed from the local wheel (no network).

    Session-scoped because it is large: tests that tamper with it restore the
    files they changed.
    """
    if not any(TORCH_WHEEL_DIR.glob("torch-2.13.0*.whl")):
        pytest.skip("torch 2.13.0 wheel not available in /opt/wheels")
    venv = tmp_path_factory.mktemp("torch-env") / "venv"
    python = make_venv(venv)
    pip_install(python, TORCH_WHEEL_DIR, TORCH_REQ)
    yield venv


def python_of(venv: Path) -> str:
    return os.fspath(venv / "bin" / "python")
