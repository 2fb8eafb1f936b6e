"""Writes torch's oldest checkpoint format (a tar) by hand, as torch 0.1-0.3 did.

``torch.save`` can no longer produce it, but ``torch.load`` still reads it
(``legacy_load`` in ``torch/serialization.py``), so scanners must too. The
layout follows that reader exactly: ``storages`` holds a pickled count, then
per storage a pickled ``(key, location, storage_class)`` and raw data
(int64 element count + bytes), then a pickled list of views; ``tensors`` a
pickled count and per tensor a pickled tuple plus a binary shape record;
``pickle`` the object graph, whose persistent ids name storage keys.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from dataclasses import dataclass


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def storage_args(key: int, storage_class: str = "FloatStorage") -> bytes:
    """The pickle ``(key, "cpu", torch.<storage_class>)`` as torch wrote it (protocol 2)."""
    return (
        b"\x80\x02J"
        + struct.pack("<i", key)
        + _str("cpu")
        + b"ctorch\n"
        + storage_class.encode()
        + b"\n\x87."  # TUPLE3, STOP
    )


def rebuild_tensor(key: int, numel: int) -> bytes:
    """A main pickle returning ``torch._utils._rebuild_tensor(storage[key], 0, (numel,), (1,))``."""
    return (
        b"\x80\x02ctorch._utils\n_rebuild_tensor\n("
        + _str(str(key))
        + b"QK\x00K"
        + bytes([numel])
        + b"\x85K\x01\x85tR."  # (numel,), (1,), TUPLE, REDUCE, STOP
    )


@dataclass
class Storage:
    key: int
    data: bytes
    storage_class: str = "FloatStorage"
    element_size: int = 4


def storages_record(storages: list[Storage], *, count: bytes | None = None) -> bytes:
    out = bytearray(count if count is not None else pickle.dumps(len(storages), protocol=2))
    for s in storages:
        out += storage_args(s.key, s.storage_class)
        out += struct.pack("<q", len(s.data) // s.element_size) + s.data
    out += pickle.dumps([], protocol=2)
    return bytes(out)


def legacy_tar(
    main: bytes,
    storages: list[Storage] | None = None,
    *,
    storages_blob: bytes | None = None,
    tensors_blob: bytes | None = None,
    extra: list[tuple[str, bytes]] | None = None,
) -> bytes:
    """A complete legacy checkpoint; ``*_blob`` replace a record's bytes wholesale."""
    members = [
        ("sys_info", pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)),
        ("pickle", main),
        ("tensors", tensors_blob if tensors_blob is not None else pickle.dumps(0, protocol=2)),
        (
            "storages",
            storages_blob if storages_blob is not None else storages_record(storages or []),
        ),
        *(extra or []),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
