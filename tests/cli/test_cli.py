"""The command line: exit codes, output streams, errors for people."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainguard.cli.main import main


def test_missing_path_is_exit_2_with_diagnostics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["scan", str(tmp_path / "nope.pt")])
    err = capsys.readouterr().err
    assert code == 2
    assert "no such file or directory" in err and "hint:" in err


def test_unknown_binary_is_reported_not_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = tmp_path / "weights.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    code = main(["scan", "--json", str(blob)])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code == 1
    assert doc["findings"][0]["rule"] == "format.unknown"
    assert "format.unknown" in err  # human report on stderr, JSON alone on stdout


def test_fail_on_threshold_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blob = tmp_path / "weights.bin"
    blob.write_bytes(b"\x01\x02\x03\xff" * 64)
    assert main(["scan", "-q", "--fail-on", "critical", str(blob)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["scan", "--fail-on", "bogus", str(blob)]) == 2


def test_output_file_and_sarif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blob = tmp_path / "w.bin"
    blob.write_bytes(b"\xff\xfe\x00\x01" * 8)
    out_file = tmp_path / "r.sarif"
    main(["scan", "-q", "--sarif", "--output", str(out_file), str(blob)])
    assert capsys.readouterr().out == ""
    assert json.loads(out_file.read_text())["version"] == "2.1.0"


def test_verbose_flag_after_subcommand(tmp_path: Path) -> None:
    blob = tmp_path / "w.bin"
    blob.write_bytes(b"\xff" * 8)
    assert main(["scan", "-q", "-v", str(blob)]) == 1


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trainguard", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("trainguard ")
