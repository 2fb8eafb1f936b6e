"""Plain pickle streams (protocols 0-5), detected from content.

Protocol 2+ starts with ``PROTO``; protocol 0/1 has no magic, so detection
parses and stack-simulates the first opcodes of a bounded prefix (text and
random binary fail within a few bytes). The whole buffer is then scanned by
:func:`trainguard.scan.pickle.scan_pickle`, trailing bytes and further
concatenated pickles included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.scan.pickle import looks_like_pickle, probe, scan_pickle

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "pickle"


#: Names whose loaders unpickle whatever the file holds.
_PICKLE_NAMES = (".pkl", ".pickle", ".joblib", ".dill", ".pt", ".pth", ".ckpt", ".bin")


def detect(data: memoryview, filename: str | None) -> bool:
    """Whether ``data`` starts like a pickle (reads at most a 64 KiB prefix).

    Under a name a loader unpickles, bytes that reach an import before they
    break are a pickle too, whatever module they name: the unpickler imports it
    (running its code) before it fails. (By content alone such bytes are text
    when the module is not a known one: ``cat\ndog\n...`` is a vocabulary.)
    """
    if looks_like_pickle(data):
        return True
    named = filename is not None and filename.lower().endswith(_PICKLE_NAMES)
    return named and probe(data).imports


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Scan every pickle stream in ``data``."""
    scan_pickle(data, ctx)
