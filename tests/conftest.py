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
