"""A small zip writer for tests: every header field can be made to lie.

Python's ``zipfile`` writes only well-formed archives; the bypasses this
project defends against need local and central headers that disagree, bad
CRCs, flag bits, hidden local entries and trailing data. Nothing here reads
or loads what it writes.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from dataclasses import dataclass


@dataclass
class Entry:
    """One member; every ``None`` override means "what an honest writer would put"."""

    name: str | bytes
    data: bytes
    method: int = 0
    flags: int = 0
    #: Name written in the local header (default: ``name``).
    local_name: str | bytes | None = None
    #: CRC written in both headers (default: the real CRC of ``data``).
    crc: int | None = None
    #: Flags written in the central header (default: ``flags``).
    central_flags: int | None = None
    local_extra: bytes = b""
    central_extra: bytes = b""
    #: False: a local header and data with no central directory record.
    in_central: bool = True
    #: Bytes written between the previous entry and this one's local header.
    gap: bytes = b""
    #: Method number written in the headers (default: ``method``; data is still
    #: compressed with ``method``).
    method_field: int | None = None

    def raw_name(self) -> bytes:
        return self.name.encode() if isinstance(self.name, str) else self.name


def _compress(entry: Entry) -> bytes:
    if entry.method == 0:
        return entry.data
    if entry.method == 8:
        co = zlib.compressobj(6, zlib.DEFLATED, -15)
        return co.compress(entry.data) + co.flush()
    raise ValueError(f"test writer cannot compress method {entry.method}")


def build_zip(
    entries: list[Entry],
    *,
    prefix: bytes = b"",
    trailer: bytes = b"",
    comment: bytes = b"",
    eocd_count: int | None = None,
    zip64: bool = False,
) -> bytes:
    """An archive of ``entries``; ``prefix``/``trailer`` go before/after it."""
    out = bytearray(prefix)
    central = bytearray()
    count = 0
    for entry in entries:
        out += entry.gap
        name = entry.raw_name()
        local = entry.local_name if entry.local_name is not None else name
        local = local.encode() if isinstance(local, str) else local
        payload = _compress(entry)
        crc = zlib.crc32(entry.data) if entry.crc is None else entry.crc
        offset = len(out) - len(prefix)
        method = entry.method if entry.method_field is None else entry.method_field
        out += struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04",
            20,
            entry.flags,
            method,
            0,
            0x21,
            crc,
            len(payload),
            len(entry.data),
            len(local),
            len(entry.local_extra),
        )
        out += local + entry.local_extra + payload
        if not entry.in_central:
            continue
        count += 1
        cflags = entry.flags if entry.central_flags is None else entry.central_flags
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            20,
            20,
            cflags,
            method,
            0,
            0x21,
            crc,
            len(payload),
            len(entry.data),
            len(name),
            len(entry.central_extra),
            0,
            0,
            0,
            0,
            offset,
        )
        central += name + entry.central_extra
    cd_offset = len(out) - len(prefix)
    out += central
    n = count if eocd_count is None else eocd_count
    if zip64:
        eocd64_offset = len(out) - len(prefix)
        out += struct.pack(
            "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(central), cd_offset
        )
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd64_offset, 1)
        out += struct.pack(
            "<4sHHHHIIH",
            b"PK\x05\x06",
            0,
            0,
            0xFFFF,
            0xFFFF,
            0xFFFFFFFF,
            0xFFFFFFFF,
            len(comment),
        )
    else:
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), cd_offset, len(comment)
        )
    out += comment + trailer
    return bytes(out)


class TouchMarker:
    """Pickles to ``os.system("touch <path>")``: the harmless payload of every sample."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.path}",)


def marker_pickle(path: str, protocol: int = 2) -> bytes:
    """A pickle that touches ``path`` when loaded (built here, never loaded here)."""
    return pickle.dumps(TouchMarker(path), protocol=protocol)


def torch_like(data_pkl: bytes, *, prefix: str = "archive", **overrides: object) -> list[Entry]:
    """The members ``torch.save`` writes, with ``data_pkl`` as the pickle (no storages)."""
    pkl = Entry(f"{prefix}/data.pkl", data_pkl)
    for key, value in overrides.items():
        setattr(pkl, key, value)
    return [
        pkl,
        Entry(f"{prefix}/byteorder", b"little"),
        Entry(f"{prefix}/version", b"3\n"),
    ]
