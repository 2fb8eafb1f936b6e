"""A dependency-free progress line on stderr for long work (only on a terminal)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO


class Progress:
    """Calls of ``progress(index, total, path)`` redraw one status line.

    Redraws at most ten times a second and only when ``stream`` is a terminal,
    so piped output and CI logs stay clean.
    """

    def __init__(self, label: str, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self._last = 0.0
        self._drawn = False

    def __call__(self, index: int, total: int | None, path: Path) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        count = f"{index + 1}/{total}" if total else f"{index + 1}"
        name = str(path)
        if len(name) > 60:
            name = "..." + name[-57:]
        self.stream.write(f"\r\033[K{self.label} [{count}] {name}")
        self.stream.flush()
        self._drawn = True

    def done(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
