"""Zip record layouts (APPNOTE 4.3): signatures, fixed headers, zip64 extras.

Pure parsing over a buffer, no judgement: the reader in :mod:`._zip` decides
what a disagreement between records means. Every function bounds its reads by
the buffer and raises ``struct.error``/``ValueError`` on a record that does not
fit, which callers treat as damage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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


@dataclass(frozen=True)
class EndRecord:
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


@dataclass(frozen=True)
class CentralRecord:
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


@dataclass(frozen=True)
class LocalRecord:
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
        tag, size = struct.unpack_from("<HH", extra, pos)
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
    f = struct.unpack_from("<4sHHHHHHIIIHHHHHII", data, pos)
    flags, method, crc, csize, size = f[3], f[4], f[7], f[8], f[9]
    name_len, extra_len, comment_len, disk, offset = f[10], f[11], f[12], f[13], f[16]
    start = pos + CENTRAL_SIZE
    if start + name_len + extra_len > len(data):
        raise ValueError("central directory record runs past the end of the file")
    raw_name = bytes(data[start : start + name_len])
    extra = bytes(data[start + name_len : start + name_len + extra_len])
    wide = _zip64_values(extra, [size == _U32, csize == _U32, offset == _U32, disk == _U16])
    size = wide[0] if wide[0] is not None else size
    csize = wide[1] if wide[1] is not None else csize
    offset = wide[2] if wide[2] is not None else offset
    return CentralRecord(
        offset=pos,
        flags=flags,
        method=method,
        crc=crc,
        compressed_size=csize,
        size=size,
        raw_name=raw_name,
        name=display_name(raw_name, flags),
        local_offset=offset,
        next_offset=start + name_len + extra_len + comment_len,
    )


def parse_local(data: memoryview, pos: int) -> LocalRecord:
    """Parse the local file header at ``pos``; data starts after its name and extra."""
    f = struct.unpack_from("<4sHHHHHIIIHH", data, pos)
    flags, method, crc, csize, size, name_len, extra_len = f[2], f[3], f[6], f[7], f[8], f[9], f[10]
    start = pos + LOCAL_SIZE
    raw_name = bytes(data[start : start + name_len])
    extra = bytes(data[start + name_len : start + name_len + extra_len])
    wide = _zip64_values(extra, [size == _U32, csize == _U32])
    zip64 = wide[0] is not None or wide[1] is not None
    return LocalRecord(
        offset=pos,
        flags=flags,
        method=method,
        crc=crc,
        compressed_size=wide[1] if wide[1] is not None else csize,
        size=wide[0] if wide[0] is not None else size,
        raw_name=raw_name,
        name=display_name(raw_name, flags),
        data_offset=start + name_len + extra_len,
        zip64=zip64,
    )


def descriptor_length(data: memoryview, end: int, crc: int, csize: int, size: int) -> int:
    """Bytes of the data descriptor at ``end`` (0 if none matches the member's values)."""
    for sig, wide in ((True, True), (True, False), (False, True), (False, False)):
        fmt = "<I" + ("QQ" if wide else "II")
        pos = end + (4 if sig else 0)
        if sig and bytes(data[end : end + 4]) != DESCRIPTOR:
            continue
        if pos + struct.calcsize(fmt) > len(data):
            continue
        if struct.unpack_from(fmt, data, pos) == (crc, csize, size):
            return pos - end + struct.calcsize(fmt)
    return 16 if bytes(data[end : end + 4]) == DESCRIPTOR else 0
