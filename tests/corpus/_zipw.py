"""A minimal stored-only zip writer that can lie the ways real attacks do.

Python's ``zipfile`` refuses to write a wrong CRC, a local header whose name
differs from the central directory's, or an entry the central directory does
not list; miniz (what ``torch.load`` uses) reads such files anyway.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass


@dataclass
class Entry:
    """One stored member. The overrides make the local header or directory lie."""

    name: str
    data: bytes
    #: CRC-32 written in both headers instead of the real one.
    crc: int | None = None
    #: Name written in the local header instead of ``name``.
    local_name: str | None = None
    #: False: a local entry the central directory does not list (hidden).
    in_central: bool = True


def _local(entry: Entry, crc: int) -> bytes:
    name = (entry.local_name or entry.name).encode()
    size = len(entry.data)
    return (
        struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, size, size, len(name), 0)
        + name
        + entry.data
    )


def _central(entry: Entry, crc: int, offset: int) -> bytes:
    name = entry.name.encode()
    size = len(entry.data)
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            0,
            0,
            0x21,
            crc,
            size,
            size,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        + name
    )


def build_zip(entries: list[Entry]) -> bytes:
    """Lay out ``entries`` in order, then a central directory for those listed in it."""
    out = bytearray()
    directory = bytearray()
    listed = 0
    for entry in entries:
        crc = entry.crc if entry.crc is not None else zlib.crc32(entry.data)
        offset = len(out)
        out += _local(entry, crc)
        if entry.in_central:
            directory += _central(entry, crc, offset)
            listed += 1
    start = len(out)
    out += directory
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, listed, listed, len(directory), start, 0)
    return bytes(out)
