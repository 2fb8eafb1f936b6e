"""The oldest PyTorch checkpoint format: a tar of ``sys_info``, ``pickle``, ``tensors``, ``storages``.

``torch.load`` still reads it (``legacy_load`` in ``torch/serialization.py``)
whenever the file opens as a tar: it extracts ``storages`` and unpickles a
count, then for each storage an ``(key, location, storage_type)`` tuple
followed by raw data, then a list of views; it unpickles the same way a count
and per-tensor tuples (each followed by a binary shape record) from
``tensors``; and finally the object graph from ``pickle``. Every one of those
pickles runs on load, so each is located and sent to the pickle scanner, not
just ``pickle``: a payload in a storage count executes just as well. Raw
tensor bytes in between are skipped using the element size of the storage
class each tuple names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity
from trainguard.scan._tar import TarReader, ViewFile, first_names, is_tar
from trainguard.scan.formats.tar import CORRUPT, check_member, report_tail, scan_polyglot

# One table of legacy storage element sizes, shared with the legacy pickle-sequence format.
from trainguard.scan.formats.torch_legacy import ELEMENT_SIZE

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "torch_tar"

STRUCTURE = Rule(
    "torch.tar-structure",
    Severity.HIGH,
    "Legacy tar checkpoint does not have the structure torch writes",
    "A record of the storages/tensors stream is not what torch.save wrote (a count that is "
    "not a plain integer, an unknown storage class, sizes past the end), so the pickles after "
    "it cannot be located and were not all scanned, while torch still unpickles them.",
)
DUPLICATE = Rule(
    "torch.tar-duplicate",
    Severity.HIGH,
    "Legacy tar checkpoint has several copies of a record",
    "torch extracts records by name and tarfile returns the last copy, while a scanner may "
    "read the first. Every copy was scanned.",
)

RECORDS = ("sys_info", "pickle", "tensors", "storages")
_INT_OPS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}
_NEUTRAL_OPS = {"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"}
_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}
_MAX_DIMS = 64


class _Broken(Exception):
    """The stream cannot be followed past this point."""


def detect(data: memoryview, filename: str | None) -> bool:
    if not is_tar(data):
        return False
    names = set(first_names(data))
    return "pickle" in names and bool(names & {"storages", "tensors"})


def scan(data: memoryview, ctx: ScanContext) -> None:
    import tarfile  # loaded with the first tar file, not at start-up

    scan_polyglot(data, ctx)
    reader = TarReader(data, ctx)
    seen: dict[str, int] = {}
    try:
        for info in reader:
            check_member(info, ctx)
            seen[info.name] = seen.get(info.name, 0) + 1
            if not (info.isreg() and info.size):
                continue
            content = reader.content(info)
            label = info.name if seen[info.name] == 1 else f"{info.name}#{seen[info.name]}"
            if info.name in ("pickle", "sys_info"):
                ctx.scan_nested(content, label, "pickle")
            elif info.name in ("storages", "tensors"):
                _walk(content, label, info.name == "storages", ctx)
            else:
                ctx.scan_nested(content, label, None)
    except tarfile.TarError as exc:
        ctx.add(CORRUPT, f"tarfile stopped at offset {reader.end}: {exc}", offset=reader.end)
        return
    for name in RECORDS:
        if seen.get(name, 0) > 1:
            ctx.add(
                DUPLICATE,
                f"{seen[name]} copies of {name!r}; torch reads the last",
                member=name,
            )
    report_tail(reader, {k: v for k, v in seen.items() if k not in RECORDS}, ctx)


class _Stream:
    """A cursor over a record's bytes that finds where each pickle ends (never loads it)."""

    def __init__(self, data: memoryview, label: str, ctx: ScanContext) -> None:
        self.data = data
        self.label = label
        self.ctx = ctx
        self.pos = 0
        self.count = 0

    def pickle(self, what: str) -> list[tuple[str, object]]:
        """Scan the pickle at the cursor as ``what``; return its first opcodes."""
        import pickletools

        start = self.pos
        fh = ViewFile(self.data)
        fh.seek(start)
        ops: list[tuple[str, object]] = []
        try:
            for n, (op, arg, _pos) in enumerate(pickletools.genops(fh)):  # type: ignore[arg-type]
                if n % 10_000 == 0:
                    self.ctx.check_time()
                if len(ops) < 64:
                    ops.append((op.name, arg))
        except Exception as exc:
            self.ctx.scan_nested(self.data[start:], f"{self.label}:{what}", "pickle")
            raise _Broken(f"{what}: not a complete pickle ({type(exc).__name__}: {exc})") from exc
        self.pos = fh.tell()
        self.count += 1
        self.ctx.scan_nested(self.data[start : self.pos], f"{self.label}:{what}", "pickle")
        return ops

    def skip(self, nbytes: int, what: str) -> None:
        if nbytes < 0 or self.pos + nbytes > len(self.data):
            raise _Broken(f"{what}: {nbytes} bytes at offset {self.pos} run past the record")
        self.pos += nbytes

    def integer(self, width: int, what: str) -> int:
        raw = bytes(self.data[self.pos : self.pos + width])
        self.skip(width, what)
        return int.from_bytes(raw, "little", signed=True)


def _count(ops: list[tuple[str, object]], what: str, limit: int) -> int:
    values = [arg for name, arg in ops if name in _INT_OPS]
    others = [name for name, _arg in ops if name not in _INT_OPS and name not in _NEUTRAL_OPS]
    if len(values) != 1 or others or not isinstance(values[0], int):
        raise _Broken(f"{what} is not a plain integer ({[n for n, _ in ops][:8]})")
    value = values[0]
    if value < 0:
        raise _Broken(f"{what} is negative")
    if value > limit:
        raise LimitExceeded("archive_members", value, limit)
    return value


def _element_size(ops: list[tuple[str, object]]) -> int:
    strings: list[str] = []
    for name, arg in ops:
        if name in _STRING_OPS and isinstance(arg, str):
            strings.append(arg)
        elif name == "GLOBAL" and isinstance(arg, str):
            return ELEMENT_SIZE.get(arg.rsplit(" ", 1)[-1], 0)
        elif name == "STACK_GLOBAL" and strings:
            return ELEMENT_SIZE.get(strings[-1], 0)
    return 0


def _walk(content: memoryview, label: str, storages: bool, ctx: ScanContext) -> None:
    stream = _Stream(content, label, ctx)
    limit = ctx.limits.archive_members
    try:
        total = _count(stream.pickle("count"), f"{label} count", limit)
        for index in range(total):
            ctx.check_time()
            ops = stream.pickle(f"entry{index}")
            if storages:
                size = _element_size(ops)
                if not size:
                    raise _Broken(f"storage {index} names no known storage class")
                numel = stream.integer(8, f"storage {index} size")
                stream.skip(numel * size, f"storage {index} data")
            else:
                ndim = stream.integer(4, f"tensor {index} ndim")
                if not 0 <= ndim <= _MAX_DIMS:
                    raise _Broken(f"tensor {index} has {ndim} dimensions")
                stream.skip(4 + 16 * ndim + 8, f"tensor {index} shape")
        if storages:
            stream.pickle("views")
    except _Broken as exc:
        ctx.add(STRUCTURE, f"{label}: {exc}", member=label, offset=stream.pos)
        return
    leftover = len(content) - stream.pos
    if leftover > 0 and bytes(content[stream.pos :]).strip(b"\x00"):
        ctx.add(
            STRUCTURE,
            f"{label}: {leftover} bytes follow the last record torch reads",
            member=label,
            offset=stream.pos,
        )
        ctx.scan_nested(content[stream.pos :], f"{label}:<trailing>", None)
