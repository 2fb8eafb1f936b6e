"""Throwaway venv copies: a real venv, and the original never changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainguard.drill.attacks._venv import copy_venv, replace_file, site_packages

pytestmark = pytest.mark.skipif(
    sys.prefix == sys.base_prefix, reason="the drills copy the running virtual environment"
)


def test_copy_is_a_working_venv_and_edits_never_reach_the_original(tmp_path: Path) -> None:
    python = copy_venv(tmp_path / "venv")
    target = site_packages(tmp_path / "venv") / "trainguard_drill_probe.py"
    original_site = site_packages(Path(sys.prefix))
    # A file of the original, edited through the copy: the original keeps its bytes.
    victim_rel = Path("torch") / "version.py"
    copied, original = site_packages(tmp_path / "venv") / victim_rel, original_site / victim_rel
    before = original.read_bytes()
    assert os.path.samefile(copied, original)  # linked, not duplicated
    replace_file(copied, before + b"\nEDITED = True\n")
    assert original.read_bytes() == before
    assert not os.path.samefile(copied, original)

    target.write_text("import torch.version as v\nprint(v.EDITED)\n")
    out = subprocess.run(
        [str(python), "-c", "import sys, trainguard_drill_probe; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["True", str(tmp_path / "venv")]
