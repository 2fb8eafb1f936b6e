"""Drills: the incident's techniques, reproduced with harmless payloads.

Every payload here only creates a marker file that the caller names, so a
drill proves that an attack *would* have run without doing any harm.

Example:
    >>> from pathlib import Path
    >>> import tempfile
    >>> from trainguard.drill import write_poisoned_checkpoint
    >>> d = Path(tempfile.mkdtemp())
    >>> write_poisoned_checkpoint({"w": 1}, d / "p.pt", marker=d / "ran")
    >>> (d / "ran").exists()   # writing never runs the payload
    False
"""

from __future__ import annotations

from trainguard.drill.payloads import (
    loads_in_subprocess,
    marker_payload,
    write_poisoned_checkpoint,
)

__all__ = ["loads_in_subprocess", "marker_payload", "write_poisoned_checkpoint"]
