"""GGUF (llama.cpp) models: header, metadata, tensor layout and chat templates.

GGUF holds no code, but its metadata carries Jinja chat templates
(``tokenizer.chat_template``, ``tokenizer.chat_template.<name>``) that some
loaders rendered without a sandbox (CVE-2024-34359 in llama-cpp-python); they
go through :mod:`trainguard.scan._jinja`. The rest is structure, checked the
way llama.cpp's loader checks it: versions 1-3 (either byte order), every
metadata value type including nested arrays (bounded by
``ScanLimits.metadata_entries``, ``json_header_bytes`` per string and
``message_depth`` for nesting), duplicate keys, ``general.alignment``, and
tensor infos: at most four dimensions, a known ggml type whose block size
divides the rows, offsets aligned, inside the file, without overlap.
Tensor data is never read.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, NamedTuple

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity
from trainguard.scan._templaterules import template_rules

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "gguf"

MALFORMED = Rule(
    "gguf.malformed",
    Severity.HIGH,
    "GGUF structure is malformed",
    "The header, metadata or tensor table breaks the GGUF format (truncation, unknown "
    "types, duplicate keys, misaligned, overlapping or out-of-range tensors). llama.cpp "
    "refuses such files or reads memory it should not; a writer never produces them, so "
    "the file was damaged or edited by hand.",
)
TRAILING = Rule(
    "gguf.trailing-data",
    Severity.LOW,
    "GGUF file has bytes after its last tensor",
    "Loaders ignore bytes past the last tensor, so they can carry a second payload that "
    "nothing checks. Find out what they are.",
)

CHAT_TEMPLATE = template_rules("gguf.chat-template", "GGUF chat template")

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NAME = 64  # GGML_MAX_NAME, terminating NUL included
_STRING, _ARRAY = 8, 9
#: Fixed-size metadata value types: type -> (struct code, size).
_FIXED = {
    0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4),
    6: ("f", 4), 7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8),
}  # fmt: skip
#: ggml tensor types: type -> (elements per block, bytes per block) (ggml.c type traits).
GGML_TYPES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip
_LISTED = 10  # tensor problems reported one by one before a summary


class _Malformed(Exception):
    """A structural error after which the rest of the file cannot be located."""


def detect(data: memoryview, filename: str | None) -> bool:
    """GGUF files start with the ASCII magic ``GGUF``."""
    return bytes(data[:4]) == _MAGIC


class _TensorInfo(NamedTuple):
    name: str
    dims: list[int]
    ggml_type: int
    offset: int
    position: int  # in the tensor table


class _Reader:
    """Bounds-checked reads at a moving position, in the file's byte order."""

    def __init__(self, data: memoryview, ctx: ScanContext) -> None:
        self.data = data
        self.ctx = ctx
        self.pos = 4
        self.order = "<"
        self.wide = True  # v2+: 64-bit counts and lengths; v1: 32-bit

    def fixed(self, code: str) -> int | float | bool:
        size = struct.calcsize(code)
        if self.pos + size > len(self.data):
            raise _Malformed(f"truncated at offset {self.pos} (need {size} bytes)")
        (value,) = struct.unpack_from(self.order + code, self.data, self.pos)
        self.pos += size
        return value  # type: ignore[no-any-return]

    def uint(self, code: str) -> int:
        return int(self.fixed(code))

    def count(self) -> int:
        return self.uint("Q" if self.wide else "I")

    def skip(self, n: int, what: str) -> None:
        if n > len(self.data) - self.pos:
            raise _Malformed(f"{what} of {n} bytes at offset {self.pos} runs past the end")
        self.pos += n

    def string(self, what: str, keep: bool = True) -> str:
        start = self.pos
        length = self.count()
        limit = self.ctx.limits.json_header_bytes
        if length > limit:
            if length > len(self.data) - self.pos:
                raise _Malformed(f"{what} at offset {start} claims {length} bytes")
            raise LimitExceeded("json_header_bytes", length, limit, subject=self.ctx.subject)
        self.skip(length, what)
        if not keep:
            return ""
        raw = bytes(self.data[self.pos - length : self.pos])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Keys and names are text by the spec; gguf-py refuses the file, llama.cpp does not.
            self.ctx.add(
                MALFORMED,
                f"{what} at offset {start} is not UTF-8",
                severity=Severity.MEDIUM,
                offset=start,
            )
            return raw.decode("utf-8", "replace")


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Parse the header, metadata and tensor table; analyse chat templates."""
    reader = _Reader(data, ctx)
    try:
        _scan(reader, ctx)
    except _Malformed as exc:
        ctx.add(MALFORMED, str(exc), offset=reader.pos)


def _scan(r: _Reader, ctx: ScanContext) -> None:
    limits = ctx.limits
    version = r.uint("I")
    if version & 0xFFFF == 0 and version:
        r.order = ">"  # a big-endian file: the version reads byte-swapped
        version = int.from_bytes(version.to_bytes(4, "little"), "big")
    if version not in (1, 2, 3):
        raise _Malformed(f"unsupported GGUF version {version} (known: 1-3)")
    r.wide = version >= 2
    n_tensors, n_kv = r.count(), r.count()
    for label, n in (("tensors", n_tensors), ("metadata keys", n_kv)):
        # Each entry takes at least 8 bytes, so a count the file cannot hold is malformed.
        if n * 8 > len(r.data):
            raise _Malformed(f"header claims {n} {label}, more than the file can hold")
        if n > limits.metadata_entries:
            raise LimitExceeded("metadata_entries", n, limits.metadata_entries, subject=ctx.subject)

    alignment = _DEFAULT_ALIGNMENT
    seen: set[str] = set()
    for _ in range(n_kv):
        ctx.check_time()
        key = r.string("metadata key")
        if key in seen:
            ctx.add(MALFORMED, f"duplicate metadata key {key!r}", key=key)
        seen.add(key)
        vtype = r.uint("I")
        is_template = key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template.")
        if key == "general.alignment":
            if vtype != 4:
                raise _Malformed(f"general.alignment has value type {vtype}, expected uint32")
            alignment = r.uint("I")
            if alignment == 0 or alignment & (alignment - 1):
                raise _Malformed(f"general.alignment {alignment} is not a power of two")
        elif is_template and vtype == _STRING:
            from trainguard.scan import _jinja  # loaded with the first template, not at start-up

            _jinja.check_template(r.string(key), ctx, CHAT_TEMPLATE, where=key)
        else:
            if is_template:
                ctx.add(
                    MALFORMED,
                    f"{key} has value type {vtype}, expected a string",
                    severity=Severity.MEDIUM,
                    key=key,
                )
            _skip_value(r, vtype, key)

    tensors = [_tensor_info(r, i) for i in range(n_tensors)]
    _check_tensors(r, tensors, alignment, ctx)


def _skip_value(r: _Reader, vtype: int, key: str) -> None:
    """Skip one metadata value; arrays (nested too) with an explicit stack."""
    limits = r.ctx.limits
    if vtype in _FIXED:
        r.skip(_FIXED[vtype][1], key)
        return
    if vtype == _STRING:
        r.string(key, keep=False)
        return
    if vtype != _ARRAY:
        raise _Malformed(f"metadata key {key!r} has unknown value type {vtype}")
    stack = [(_ARRAY, 1)]
    strings = 0
    while stack:
        etype, remaining = stack.pop()
        if remaining == 0:
            continue
        if etype in _FIXED:
            r.skip(remaining * _FIXED[etype][1], f"array in {key!r}")
        elif etype == _STRING:
            for _ in range(remaining):
                r.string(f"array string in {key!r}", keep=False)
                strings += 1
                if strings % 65536 == 0:
                    r.ctx.check_time()
        elif etype == _ARRAY:
            stack.append((_ARRAY, remaining - 1))
            inner, count = r.uint("I"), r.count()
            if len(stack) >= limits.message_depth:
                raise LimitExceeded(
                    "message_depth", len(stack) + 1, limits.message_depth, subject=r.ctx.subject
                )
            if inner not in _FIXED and inner not in (_STRING, _ARRAY):
                raise _Malformed(f"array in {key!r} has unknown element type {inner}")
            # Elements take at least their size (strings 8, arrays 12 bytes): impossible
            # counts are malformed before they are large.
            least = _FIXED[inner][1] if inner in _FIXED else (8 if inner == _STRING else 12)
            if count * least > len(r.data) - r.pos:
                raise _Malformed(f"array in {key!r} claims {count} elements past the end")
            if inner not in _FIXED and count > limits.metadata_entries:
                raise LimitExceeded(
                    "metadata_entries", count, limits.metadata_entries, subject=r.ctx.subject
                )
            stack.append((inner, count))
        else:  # pragma: no cover - element types are checked when pushed
            raise _Malformed(f"array in {key!r} has unknown element type {etype}")


def _tensor_info(r: _Reader, index: int) -> _TensorInfo:
    name = r.string("tensor name")
    n_dims = r.uint("I")
    if n_dims > _MAX_DIMS:
        raise _Malformed(f"tensor {name!r} has {n_dims} dimensions (ggml allows {_MAX_DIMS})")
    dims = [r.uint("Q" if r.wide else "I") for _ in range(n_dims)]
    ggml_type = r.uint("I")
    offset = r.uint("Q")
    return _TensorInfo(name, dims, ggml_type, offset, index)


def _nbytes(t: _TensorInfo) -> int | str:
    """The tensor's size in bytes, or why it has none."""
    if t.ggml_type not in GGML_TYPES:
        return f"unknown ggml type {t.ggml_type}"
    block, type_size = GGML_TYPES[t.ggml_type]
    if any(d >= 1 << 63 for d in t.dims):
        return f"dimension past INT64_MAX in {t.dims}"
    numel = 1
    for d in t.dims:
        numel *= d
    if numel >= 1 << 63:
        return f"element count {numel} overflows int64"
    first = t.dims[0] if t.dims else 1
    if first % block:
        return f"row length {first} is not a multiple of the type's block size {block}"
    return numel // block * type_size


def _check_tensors(
    r: _Reader, tensors: list[_TensorInfo], alignment: int, ctx: ScanContext
) -> None:
    data_start = -(-r.pos // alignment) * alignment
    data_size = len(r.data) - data_start
    problems: list[tuple[str, dict[str, object], Severity]] = []
    names: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    expected = 0  # llama.cpp requires tensors back to back, each padded to the alignment
    for t in tensors:
        where = {"tensor": t.name, "index": t.position}
        if t.name in names:
            problems.append((f"duplicate tensor name {t.name!r}", where, Severity.HIGH))
        names.add(t.name)
        if len(t.name.encode()) >= _MAX_NAME:
            problems.append(
                (f"tensor name longer than {_MAX_NAME - 1} bytes", where, Severity.MEDIUM)
            )
        size = _nbytes(t)
        if isinstance(size, str):
            problems.append((f"tensor {t.name!r}: {size}", where, Severity.HIGH))
            continue
        if t.offset % alignment:
            problems.append(
                (
                    f"tensor {t.name!r} offset {t.offset} is not aligned to {alignment}",
                    where,
                    Severity.HIGH,
                )
            )
        if t.offset + size > data_size or data_size < 0:
            problems.append(
                (
                    f"tensor {t.name!r} spans bytes {t.offset}..{t.offset + size} of a "
                    f"{max(data_size, 0)}-byte data section",
                    where,
                    Severity.HIGH,
                )
            )
        elif t.offset != expected:
            problems.append(
                (
                    f"tensor {t.name!r} at offset {t.offset}, expected {expected}",
                    where,
                    Severity.MEDIUM,
                )
            )
        expected = max(expected, t.offset + -(-size // alignment) * alignment)
        spans.append((t.offset, t.offset + size, t.name))

    spans.sort()
    reach, holder = 0, ""
    for start, stop, name in spans:
        if start < reach and stop > start:
            problems.append(
                (
                    f"tensors {holder!r} and {name!r} overlap",
                    {"tensors": [holder, name]},
                    Severity.HIGH,
                )
            )
        if stop > reach:
            reach, holder = stop, name

    for message, evidence, severity in problems[:_LISTED]:
        ctx.add(
            MALFORMED, message, severity=severity if severity != Severity.HIGH else None, **evidence
        )
    if len(problems) > _LISTED:
        ctx.add(
            MALFORMED,
            f"{len(problems) - _LISTED} more tensor table problems",
            severity=max(s for _, _, s in problems[_LISTED:]),
            count=len(problems),
        )

    end = data_start + (max(e for _, e, _ in spans) if spans else 0)
    slack = len(r.data) - end
    if slack >= alignment:
        ctx.add(
            TRAILING,
            f"{slack} bytes after the last tensor",
            trailing_bytes=slack,
            data_end=end,
        )
