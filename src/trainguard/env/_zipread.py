"""Read a few named members of a big zip (a wheel) without parsing its whole directory.

``zipfile`` builds a ``ZipInfo`` for each of the 14,000 members of the torch
wheel (about 0.15 s) when verification needs two of them: the RECORD and
``entry_points.txt``. This reader finds the central directory, locates the
wanted names with one regular-expression pass, and checks each member's CRC.
Anything unexpected raises ``ValueError``: the wheel is then not used as an
anchor, never half-trusted.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["read_members"]

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_CENTRAL_FMT = struct.Struct("<4s6H3L5H2L")  # 46 bytes
_LOCAL_FMT = struct.Struct("<4s5H3L2H")  # 30 bytes
#: Largest member this reader inflates (a RECORD of 100,000 lines is ~15 MB).
MAX_MEMBER = 256 * 1024 * 1024


def _central_directory(fh: BinaryIO, size: int) -> bytes:
    read, seek = fh.read, fh.seek
    tail_len = min(size, 65_557)
    seek(size - tail_len)
    tail = read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise ValueError("no end-of-central-directory record")
    cd_size, cd_offset = struct.unpack_from("<LL", tail, at + 12)
    if cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
        loc = at - 20
        if loc < 0 or tail[loc : loc + 4] != _EOCD64_LOCATOR:
            raise ValueError("zip64 locator missing")
        (eocd64_offset,) = struct.unpack_from("<Q", tail, loc + 8)
        seek(eocd64_offset)
        rec = read(56)
        if rec[:4] != b"PK\x06\x06":
            raise ValueError("zip64 end record missing")
        cd_size, cd_offset = struct.unpack_from("<QQ", rec, 40)
    if cd_offset + cd_size > size:
        raise ValueError("central directory beyond end of file")
    seek(cd_offset)
    cd: bytes = read(cd_size)
    return cd


def _find_names(cd: bytes, suffix: bytes) -> list[tuple[int, bytes]]:
    """(header offset, name) of central-directory entries whose name ends with ``suffix``."""
    found = []
    pos = cd.find(suffix)
    while pos >= 0:
        end = pos + len(suffix)
        header = cd.rfind(_CENTRAL, 0, pos)
        if header >= 0:
            name_len = struct.unpack_from("<H", cd, header + 28)[0]
            if header + 46 + name_len == end:
                found.append((header, cd[header + 46 : end]))
        pos = cd.find(suffix, end)
    return found


def read_members(
    path: str, suffixes: tuple[bytes, ...], keep: Callable[[str], bool] = lambda name: True
) -> dict[str, bytes]:
    """The members of zip ``path`` whose names end with one of ``suffixes`` and pass ``keep``."""
    out: dict[str, bytes] = {}
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        cd = _central_directory(fh, size)
        hits = [hit for suffix in suffixes for hit in _find_names(cd, suffix)]
        for start, raw_name in hits:
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if not keep(name):
                continue
            fields = _CENTRAL_FMT.unpack_from(cd, start)
            method, crc, csize, usize = fields[4], fields[7], fields[8], fields[9]
            name_len, extra_len, offset = fields[10], fields[11], fields[16]
            if 0xFFFFFFFF in (csize, usize, offset):
                extra = cd[start + 46 + name_len : start + 46 + name_len + extra_len]
                csize, usize, offset = _zip64_sizes(extra, csize, usize, offset)
            if usize > MAX_MEMBER or csize > size:
                raise ValueError(f"member {name!r} too large")
            fh.seek(offset)
            local = fh.read(_LOCAL_FMT.size)
            if len(local) != _LOCAL_FMT.size or local[:4] != _LOCAL:
                raise ValueError(f"bad local header for {name!r}")
            lfields = _LOCAL_FMT.unpack(local)
            fh.seek(offset + _LOCAL_FMT.size + lfields[9] + lfields[10])
            raw = fh.read(csize)
            if method == 0:
                data = raw
            elif method == 8:
                try:
                    data = zlib.decompressobj(-15).decompress(raw, MAX_MEMBER + 1)
                except zlib.error as exc:
                    raise ValueError(f"cannot inflate {name!r}: {exc}") from exc
            else:
                raise ValueError(f"unsupported compression {method} for {name!r}")
            if len(data) != usize or zlib.crc32(data) != crc:
                raise ValueError(f"CRC or size mismatch for {name!r}")
            out[name] = data
    return out


def _zip64_sizes(extra: bytes, csize: int, usize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if tag == 1:
            values = list(struct.unpack_from(f"<{len(body) // 8}Q", body))
            if usize == 0xFFFFFFFF:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF:
                offset = values.pop(0)
            return csize, usize, offset
        pos += 4 + length
    raise ValueError("zip64 extra field missing")
