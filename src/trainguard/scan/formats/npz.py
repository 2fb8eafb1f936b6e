"""NumPy ``.npz`` archives: a zip whose members are ``.npy`` arrays.

``numpy.load`` opens them with Python's zipfile and reads each member with the
``.npy`` reader, so an object-dtype member is a pickle unpickled under
``allow_pickle=True``. Every member (and every hidden or duplicate entry the
tolerant reader finds) is scanned with the numpy format preferred.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.scan._zip import central_names, read_archive, scan_member, scan_outside
from trainguard.scan._zipformat import EOCD, LOCAL

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "npz"


def detect(data: memoryview, filename: str | None) -> bool:
    # numpy.load only takes the zip path when the file starts with a zip signature.
    if bytes(data[:4]) not in (LOCAL, EOCD):
        return False
    names = [n for n in central_names(data) if not n.endswith(b"/")]
    return bool(names) and all(n.endswith(b".npy") for n in names)


def scan(data: memoryview, ctx: ScanContext) -> None:
    archive = read_archive(data, ctx)
    for member in archive.members:
        if not member.is_dir:
            hint = "numpy" if member.raw_name.endswith(b".npy") else None
            scan_member(archive, member, hint)
    scan_outside(archive)
