"""Shared fixtures and marker handling."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: The shared folder beside the checkout (RFC 6962 vectors...). May be absent outside CI.
SHARED = REPO.parent / "shared"


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    """A temp dir where harmless malicious samples would touch a marker file if run."""
    d = tmp_path / "markers"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def demo_result(tmp_path_factory: pytest.TempPathFactory) -> object:
    """One real ``trainguard demo`` run (with its default drills), shared by the tests of
    the demo and the dashboard: a few minutes of two CPUs, so it runs once per session."""
    from trainguard.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "out"
    return run_demo(out)
