"""Uncompressed joblib files (``joblib.dump``): a pickle with inline numpy arrays.

joblib writes each array's raw bytes right after its ``NumpyArrayWrapper`` in
the pickle stream, so a plain pickle parser would read array data as opcodes.
The scan skips those bytes (sized from the wrapper's shape, dtype and
alignment padding) and scans object arrays, which joblib stores as nested
pickles. Compressed joblib files are decompressed by the ``compressed`` format
and come back here as nested content.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.scan._pages import prefetch
from trainguard.scan.pickle import looks_like_pickle, scan_pickle

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "joblib"

#: How far into the file detection looks for joblib's array wrapper.
_DETECT_BYTES = 1 << 20
_MARKERS = (b"joblib.numpy_pickle", b"NumpyArrayWrapper")


def detect(data: memoryview, filename: str | None) -> bool:
    """A pickle that names joblib's array wrapper within its first MiB."""
    if not looks_like_pickle(data):
        return False
    prefetch(data, 0, _DETECT_BYTES)  # detection reads without read-ahead
    head = bytes(data[:_DETECT_BYTES])
    return all(marker in head for marker in _MARKERS)


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Scan the pickle, skipping inline array bytes."""
    scan_pickle(data, ctx, joblib_arrays=True)
