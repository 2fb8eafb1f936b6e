"""`trainguard scan` imports what it scans with, nothing else.

Every command is one process (a Slurm prolog scans each checkpoint), so what a
command imports is paid on every file. These tests pin the modules a scan of a
torch checkpoint must *not* load: other engines and commands, format internals
only other formats need, and output formatters under ``-q``. They check the
import graph, never a wall time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

#: Modules a quiet scan of a clean torch checkpoint has no use for.
NOT_FOR_A_CHECKPOINT = {
    # other commands and engines
    "trainguard.cli.code",
    "trainguard.cli.convert",
    "trainguard.cli.demo",
    "trainguard.cli.env",
    "trainguard.cli.ledger",
    "trainguard.cli.preflight",
    "trainguard.cli._progress",
    "trainguard.env",
    "trainguard.ledger",
    "trainguard.sentinel",
    # what other formats need
    "trainguard.scan._jinja",
    "trainguard.scan._keras",
    "trainguard.scan._torchscript",
    "trainguard.scan._pycode",
    "trainguard.scan.folders",
    "tarfile",
    "pickletools",
    "jinja2",
    "h5py",
    # nothing is rendered under -q
    "trainguard.report.json",
    "trainguard.report.sarif",
    "trainguard.report.text",
    # never needed to read a checkpoint
    "torch",
    "numpy",
    "json",
    "pathlib",
}

_PROBE = """
import sys
from trainguard.cli.main import main
code = main(sys.argv[1:])
print(code, *sorted(sys.modules), sep="\\n")
"""


def _run(*argv: str) -> tuple[int, set[str]]:
    """Run the command in a fresh interpreter; its exit code and every module it loaded."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    code, *modules = proc.stdout.splitlines()
    return int(code), set(modules)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(4, 4), "step": torch.tensor(3)}, path)
    return path


def test_quiet_scan_of_a_checkpoint_loads_no_other_engine(checkpoint: Path) -> None:
    code, modules = _run("scan", "-q", str(checkpoint))
    assert code == 0
    assert "trainguard.scan.formats.torch_zip" in modules  # the probe saw the scan
    assert not NOT_FOR_A_CHECKPOINT & modules


def test_help_still_lists_every_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trainguard", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    for command in ("demo", "scan", "convert", "env", "code", "preflight", "ledger"):
        assert command in proc.stdout


def test_mistyped_command_gets_the_full_parser(capsys: pytest.CaptureFixture[str]) -> None:
    from trainguard.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["scna", "x"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
