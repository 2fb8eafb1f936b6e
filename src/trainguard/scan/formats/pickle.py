"""Plain pickle streams (protocols 0-5), detected from content.

Protocol 2+ starts with ``PROTO``; protocol 0/1 has no magic, so detection
parses and stack-simulates the first opcodes of a bounded prefix (text and
random binary fail within a few bytes). The whole buffer is then scanned by
:func:`trainguard.scan.pickle.scan_pickle`, trailing bytes and further
concatenated pickles included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.scan.pickle import looks_like_pickle, scan_pickle

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "pickle"


def detect(data: memoryview, filename: str | None) -> bool:
    """Whether ``data`` starts like a pickle (reads at most a 64 KiB prefix)."""
    return looks_like_pickle(data)


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Scan every pickle stream in ``data``."""
    scan_pickle(data, ctx)
