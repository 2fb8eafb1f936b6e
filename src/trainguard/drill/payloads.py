"""Harmless malicious artifacts: pickles that create a marker file when loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class _MarkerPayload:
    """Pickles as ``builtins.exec(<create marker>)``: what a poisoned checkpoint carries.

    Pickling only records the call; nothing runs until somebody unpickles it
    with a full unpickler (``torch.load(..., weights_only=False)``, ``pickle.load``).
    """

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import builtins

        return (builtins.exec, (self.code,))


def marker_payload(marker: Path) -> object:
    """An object that, once pickled, creates ``marker`` when unpickled."""
    return _MarkerPayload(Path(marker))


def write_poisoned_checkpoint(state: Mapping[str, Any], path: Path, *, marker: Path) -> None:
    """``torch.save`` ``state`` plus a hidden payload entry, as the insider did.

    The checkpoint still loads and still holds every tensor of ``state``: only
    the extra ``_metadata_cache`` entry runs code, and only on a full unpickle.
    """
    import torch

    poisoned = dict(state)
    poisoned["_metadata_cache"] = marker_payload(marker)
    torch.save(poisoned, path)


def loads_in_subprocess(path: Path, *, weights_only: bool, timeout: float = 120.0) -> bool:
    """Load ``path`` with ``torch.load`` in a throwaway interpreter; True when it loaded.

    This is the only place a drill lets an untrusted artifact be unpickled: a
    separate process made for that purpose, so a payload can prove it would
    run without touching the caller.
    """
    code = textwrap.dedent(
        f"""
        import torch
        torch.load({str(path)!r}, weights_only={weights_only!r}, map_location="cpu")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=str(Path(path).parent),
    )
    return proc.returncode == 0
