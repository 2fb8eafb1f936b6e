"""The demo runs end to end and every step reports what really happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainguard.cli.main import main
from trainguard.demo import run_demo


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    seen: list[str] = []
    result = run_demo(tmp_path / "out", progress=lambda i, n, t: seen.append(t))
    assert [s.title for s in result.steps] == seen
    assert result.ok, [s for s in result.steps if not s.ok]
    assert not (tmp_path / "out" / "PAYLOAD-RAN").exists()
    scan = result.reports["scan"]
    assert any(
        f.rule == "pickle.dangerous-global" and "shared.pt" in f.subject for f in scan.findings
    )
    assert (tmp_path / "out" / "scan-report.sarif").exists()
    assert (tmp_path / "out" / "checkpoints" / "run-001-step50.safetensors").exists()


@pytest.mark.slow
def test_demo_cli_exit_code(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path / "cli")]) == 0
