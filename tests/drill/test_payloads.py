"""Drill payloads: inert when written, live when loaded unsafely, refused when loaded safely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainguard.drill import loads_in_subprocess, write_poisoned_checkpoint
from trainguard.errors import UnsafeArtifactError
from trainguard.scan.load import read_verified


@pytest.mark.slow
def test_poisoned_checkpoint_is_live_only_when_unpickled_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "p.pt"
    write_poisoned_checkpoint({"w": torch.ones(3)}, path, marker=marker)
    assert not marker.exists()
    # weights_only refuses the exec global: nothing runs.
    assert not loads_in_subprocess(path, weights_only=True)
    assert not marker.exists()
    with pytest.raises(UnsafeArtifactError, match=r"builtins\.exec"):
        read_verified(path)
    assert loads_in_subprocess(path, weights_only=False)
    assert marker.exists()
