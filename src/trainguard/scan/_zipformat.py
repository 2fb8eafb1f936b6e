"""Zip record layouts (APPNOTE 4.3): signatures, fixed headers, zip64 extras.

Pure parsing over a buffer, no judgement: the reader in :mod:`._zip` decides
what a disagreement between records means. Every function bounds its reads by
the buffer and raises ``struct.error``/``ValueError`` on a record that does not
fit, which callers treat as damage.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

LOCAL = b"PK\x03\x04"
CENTRAL = b"PK\x01\x02"
EOCD = b"PK\x05\x06"
EOCD64 = b"PK\x06\x06"
LOCATOR64 = b"PK\x06\x07"
DESCRIPTOR = b"PK\x07\x08"

LOCAL_SIZE = 30
CENTRAL_SIZE = 46
EOCD_SIZE = 22
EOCD64_SIZE = 56
LOCATOR64_SIZE = 20

FLAG_ENCRYPTED = 0x0001
FLAG_DESCRIPTOR = 0x0008
FLAG_PATCHED = 0x0020
FLAG_STRONG = 0x0040
FLAG_UTF8 = 0x0800

#: Compression methods the reader can decode.
METHODS = {0: "stored", 8: "deflate", 12: "bzip2", 14: "lzma"}

_ZIP64_EXTRA = 0x0001
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF

_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_EXTRA_HEAD = struct.Struct("<HH")
_DESCRIPTOR_WIDE = struct.Struct("<IQQ")  # crc, compressed size, size (zip64)
_DESCRIPTOR_NARROW = struct.Struct("<III")


def display_name(raw: bytes, flags: int) -> str:
    """A readable name: UTF-8 when flagged or valid, else cp437 (zip's legacy charset)."""
    if flags & FLAG_UTF8:
        return raw.decode("utf-8", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp437")


def zipfile_name(raw: bytes, flags: int) -> str | None:
    """The name as Python's zipfile decodes it; ``None`` where zipfile would crash."""
    if flags & FLAG_UTF8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return raw.decode("cp437")


class EndRecord(NamedTuple):
    """The end of central directory, with zip64 values folded in when present."""

    offset: int
    entries: int
    cd_size: int
    cd_offset: int
    comment_length: int
    #: Bytes before the archive proper, as zipfile computes it ("concat").
    base: int
    #: (start, end) of the zip64 end record and locator, when present.
    zip64_span: tuple[int, int] | None = None


class CentralRecord(NamedTuple):
    offset: int
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    raw_name: bytes
    name: str
    local_offset: int
    next_offset: int


class LocalRecord(NamedTuple):
    offset: int
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    raw_name: bytes
    name: str
    data_offset: int
    zip64: bool


def find_end(data: memoryview) -> int | None:
    """Offset of the end record as miniz finds it: the last signature with a full record after it."""
    last = len(data) - EOCD_SIZE
    if last >= 0 and data[last : last + 4] == EOCD:
        return last  # no archive comment: the latest place it can be, no search
    tail_start = max(len(data) - (_U16 + EOCD_SIZE), 0)
    tail = bytes(data[tail_start:])
    pos = tail.rfind(EOCD, 0, max(len(tail) - EOCD_SIZE + 4, 0))
    return None if pos < 0 else tail_start + pos


def parse_end(data: memoryview, pos: int) -> EndRecord:
    """Parse the end record at ``pos`` and, if its locator is there, the zip64 end record."""
    _sig, _disk, _cd_disk, _n_disk, entries, cd_size, cd_offset, comment = struct.unpack_from(
        "<4sHHHHIIH", data, pos
    )
    zip64_span = None
    loc = pos - LOCATOR64_SIZE
    if loc >= 0 and bytes(data[loc : loc + 4]) == LOCATOR64:
        _s, _d, rel_offset, _disks = struct.unpack_from("<4sIQI", data, loc)
        # zipfile and miniz look right before the locator; miniz then tries its offset.
        for start in (loc - EOCD64_SIZE, rel_offset):
            if 0 <= start <= len(data) - EOCD64_SIZE and bytes(data[start : start + 4]) == EOCD64:
                fields = struct.unpack_from("<4sQHHIIQQQQ", data, start)
                entries, cd_size, cd_offset = fields[7], fields[8], fields[9]
                zip64_span = (start, pos)
                break
    base = pos - cd_size - cd_offset
    if zip64_span is not None:
        base -= EOCD64_SIZE + LOCATOR64_SIZE
    return EndRecord(pos, entries, cd_size, cd_offset, comment, base, zip64_span)


def _zip64_values(extra: bytes, wanted: list[bool]) -> list[int | None]:
    """Values of the zip64 extra field for the header fields that overflowed, in order."""
    out: list[int | None] = [None] * len(wanted)
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = _EXTRA_HEAD.unpack_from(extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if tag != _ZIP64_EXTRA:
            continue
        cursor = 0
        for i, need in enumerate(wanted):
            width = 4 if i == 3 else 8  # the disk number is the only 4-byte field
            if need and cursor + width <= len(body):
                out[i] = int.from_bytes(body[cursor : cursor + width], "little")
                cursor += width
        break
    return out


def parse_central(data: memoryview, pos: int) -> CentralRecord:
    """Parse the central directory record at ``pos``."""
    f = _CENTRAL.unpack_from(data, pos)
    flags, method, crc, csize, size = f[3], f[4], f[7], f[8], f[9]
    name_len, extra_len, comment_len, disk, offset = f[10], f[11], f[12], f[13], f[16]
    start = pos + CENTRAL_SIZE
    if start + name_len + extra_len > len(data):
        raise ValueError("central directory record runs past the end of the file")
    raw_name = bytes(data[start : start + name_len])
    wanted = [size == _U32, csize == _U32, offset == _U32, disk == _U16]
    if True in wanted:  # the zip64 extra only matters for a field that overflowed
        extra = bytes(data[start + name_len : start + name_len + extra_len])
        wide = _zip64_values(extra, wanted)
        size = wide[0] if wide[0] is not None else size
        csize = wide[1] if wide[1] is not None else csize
        offset = wide[2] if wide[2] is not None else offset
    return CentralRecord(
        pos,
        flags,
        method,
        crc,
        csize,
        size,
        raw_name,
        display_name(raw_name, flags),
        offset,
        start + name_len + extra_len + comment_len,
    )


def parse_local(data: memoryview, pos: int) -> LocalRecord:
    """Parse the local file header at ``pos``; data starts after its name and extra."""
    f = _LOCAL.unpack_from(data, pos)
    flags, method, crc, csize, size, name_len, extra_len = f[2], f[3], f[6], f[7], f[8], f[9], f[10]
    start = pos + LOCAL_SIZE
    raw_name = bytes(data[start : start + name_len])
    zip64 = False
    if size == _U32 or csize == _U32:  # the zip64 extra only matters for a field that overflowed
        extra = bytes(data[start + name_len : start + name_len + extra_len])
        wide = _zip64_values(extra, [size == _U32, csize == _U32])
        zip64 = wide[0] is not None or wide[1] is not None
        csize = wide[1] if wide[1] is not None else csize
        size = wide[0] if wide[0] is not None else size
    return LocalRecord(
        pos,
        flags,
        method,
        crc,
        csize,
        size,
        raw_name,
        display_name(raw_name, flags),
        start + name_len + extra_len,
        zip64,
    )


def descriptor_length(data: memoryview, end: int, crc: int, csize: int, size: int) -> int:
    """Bytes of the data descriptor at ``end`` (0 if none matches the member's values).

    Tried in order: signed zip64, signed, unsigned zip64, unsigned; a signature
    with values that match no layout counts as the common signed 16 bytes.
    """
    values = (crc, csize, size)
    room = len(data) - end
    signed = bytes(data[end : end + 4]) == DESCRIPTOR
    if signed:
        if room >= 24 and _DESCRIPTOR_WIDE.unpack_from(data, end + 4) == values:
            return 24
        if room >= 16 and _DESCRIPTOR_NARROW.unpack_from(data, end + 4) == values:
            return 16
    if room >= 20 and _DESCRIPTOR_WIDE.unpack_from(data, end) == values:
        return 20
    if room >= 12 and _DESCRIPTOR_NARROW.unpack_from(data, end) == values:
        return 12
    return 16 if signed else 0
