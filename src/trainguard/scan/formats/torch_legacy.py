"""Legacy PyTorch checkpoints (``torch.save(..., _use_new_zipfile_serialization=False)``).

What ``torch.serialization._legacy_load`` reads, in order: a pickle of
``MAGIC_NUMBER``, a pickle of ``PROTOCOL_VERSION`` (1001), a ``sys_info``
pickle, the data pickle (storages come through ``persistent_load`` as
``('storage', <StorageType>, key, location, numel, view)``), a pickle of the
sorted storage keys, then for each key the raw storage: an 8-byte element
count followed by ``count * element_size`` bytes.

Every pickle is scanned; storages are skipped by their sizes without being
read (speed on big checkpoints), and only the start of each storage's bytes is
probed: a loader reading the file as a sequence of pickles would parse it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from trainguard.findings import Rule, Severity
from trainguard.scan._pages import expect_random_access
from trainguard.scan.pickle import (
    Global,
    OpReader,
    PickleParseError,
    SDict,
    literal_str,
    looks_like_pickle,
    scan_pickle,
    scan_trailing,
)
from trainguard.scan.pickle._probe import probe

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "torch_legacy"

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STRUCTURE = Rule(
    "torch-legacy.structure",
    Severity.HIGH,
    "Legacy torch checkpoint is not laid out as torch writes it",
    "A legacy checkpoint is five pickles (magic number, protocol version, sys_info, data, "
    "storage keys) followed by raw storages. A header pickle with another value, a missing "
    "pickle or storage keys that are not strings means the file was crafted or damaged; "
    "torch fails on it only after unpickling what came before.",
)
STORAGE = Rule(
    "torch-legacy.storage",
    Severity.HIGH,
    "Legacy torch storage data does not match its description",
    "A storage's size header disagrees with the data pickle, a key has no storage, or the "
    "storage bytes run past the end of the file.",
)
STORAGE_PICKLE = Rule(
    "torch-legacy.storage-pickle",
    Severity.HIGH,
    "Legacy torch storage bytes parse as a pickle that imports code",
    "torch reads these bytes as raw tensor data, but a loader that reads the file as a "
    "sequence of pickles would execute them.",
)

#: Bytes per element for each legacy storage type (``torch._utils._element_size``).
ELEMENT_SIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "QInt8Storage": 1,
    "QUInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
    "UntypedStorage": 1,
}
_HEADER = struct.Struct("<q")
#: Bytes of each storage probed for pickle opcodes.
_PROBE_BYTES = 256
_INT_OPS = frozenset(b"IJKLM\x8a\x8b")
_MEMO_OPS = frozenset(b"\x80\x95pqr\x94")


def detect(data: memoryview, filename: str | None) -> bool:
    """The file starts with a pickle of torch's legacy magic number."""
    value: Any = None
    try:
        for _pos, code, arg in OpReader(data, 0, min(len(data), 64)):
            if code == ord("."):
                return bool(value == MAGIC_NUMBER)
            if code in _INT_OPS and value is None:
                value = arg
            elif code not in _MEMO_OPS:
                return False
    except PickleParseError:
        return False
    return False


def _storages(pids: tuple[Any, ...]) -> dict[str, tuple[int, int]]:
    """key -> (numel, element size) from the ``('storage', ...)`` persistent ids."""
    out: dict[str, tuple[int, int]] = {}
    for pid in pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and literal_str(pid[0]) == "storage"):
            continue
        kind, key, numel = pid[1], literal_str(pid[2]), pid[4]
        size = ELEMENT_SIZE.get(kind.name.rsplit(".", 1)[-1]) if isinstance(kind, Global) else None
        if key is not None and size is not None and type(numel) is int:
            out[key] = (numel, size)
    return out


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Scan the five pickles, walk the storages, judge what follows."""
    pos = 0
    expected = (("magic number", MAGIC_NUMBER), ("protocol version", PROTOCOL_VERSION))
    for what, value in expected:
        summary = scan_pickle(data, ctx, offset=pos, allow_trailing=True)
        if not summary.complete:
            return
        if summary.result != value:
            ctx.add(STRUCTURE, f"{what} pickle holds {summary.result!r}", offset=pos, part=what)
        pos = summary.end
    parts: list[Any] = []
    for what in ("sys_info", "data", "storage keys"):
        if pos >= len(data):
            ctx.add(STRUCTURE, f"the file ends before the {what} pickle", offset=pos, part=what)
            return
        summary = scan_pickle(data, ctx, offset=pos, allow_trailing=True)
        if not summary.complete:
            return
        parts.append(summary)
        pos = summary.end
    sys_info, main, keys_pickle = parts
    little = True
    if isinstance(sys_info.result, SDict):
        little = sys_info.result.get("little_endian") is not False
    else:
        ctx.add(STRUCTURE, "sys_info pickle is not a dict", part="sys_info")
    keys = keys_pickle.result
    if not isinstance(keys, list) or not all(literal_str(k) is not None for k in keys):
        ctx.add(STRUCTURE, "storage keys pickle is not a list of strings", part="storage keys")
        scan_trailing(data, ctx, pos)
        return
    names = [literal_str(k) or "" for k in keys]
    expect_random_access(data)  # storages are stepped over, one header per tensor
    after = _walk_storages(data, ctx, pos, names, main.persistent_ids, little)
    if after is not None and after < len(data):
        scan_trailing(data, ctx, after)


def _walk_storages(
    data: memoryview,
    ctx: ScanContext,
    pos: int,
    keys: list[str],
    pids: tuple[Any, ...],
    little: bool,
) -> int | None:
    """Skip every storage by its size; return the offset after the last one."""
    described = _storages(pids)
    header = _HEADER if little else struct.Struct(">q")
    for key in keys:
        if key not in described:
            ctx.add(STORAGE, f"storage key {key!r} has no storage in the data pickle", key=key)
            return None
        numel, size = described[key]
        if pos + 8 > len(data):
            ctx.add(STORAGE, f"storage {key!r} is missing: the file ends at {len(data)}", key=key)
            return None
        count = header.unpack_from(data, pos)[0]
        if count != numel:
            ctx.add(
                STORAGE,
                f"storage {key!r} header says {count} elements, the data pickle says {numel}",
                key=key,
                offset=pos,
            )
        start, end = pos + 8, pos + 8 + max(count, 0) * size
        if end > len(data):
            ctx.add(STORAGE, f"storage {key!r} runs past the end of the file", key=key, offset=pos)
            return None
        for at in (pos, start):
            found = probe(data, at, max_bytes=min(_PROBE_BYTES, end - at), max_ops=32)
            if found.imports and found.ops >= 3 and (found.error is None or found.reached_stop):
                ctx.add(
                    STORAGE_PICKLE,
                    f"bytes of storage {key!r} at offset {at} parse as pickle opcodes that import",
                    key=key,
                    offset=at,
                )
                break
        pos = end
    if pos < len(data) and not looks_like_pickle(data, pos):
        ctx.add(
            STRUCTURE,
            f"{len(data) - pos} bytes follow the last storage",
            offset=pos,
            size=len(data) - pos,
        )
        return None
    return pos
