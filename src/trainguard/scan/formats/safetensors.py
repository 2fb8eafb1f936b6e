"""safetensors files: the header checked the way the safetensors crate checks it.

A safetensors file is an 8-byte little-endian header length, a UTF-8 JSON
object mapping tensor names to ``{dtype, shape, data_offsets}`` (plus an
optional ``__metadata__`` string map), then the tensor bytes. It cannot run
code, but a malformed header crashes or misleads loaders, and since writers
never produce one, it means the file was damaged or edited by hand.

Checks, in O(header) (tensor bytes are never read): header length within the
crate's 100,000,000-byte cap and ``ScanLimits.json_header_bytes``; UTF-8; a
JSON object without duplicate keys (parsers disagree on which one wins);
``__metadata__`` a string-to-string map; each tensor with a dtype the crate
knows, a shape of non-negative integers, and ``data_offsets`` whose length
matches shape and dtype; tensors covering the data area exactly, in order,
without gaps, overlap or trailing bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "safetensors"

HEADER = Rule(
    "safetensors.header",
    Severity.HIGH,
    "safetensors header is malformed",
    "The header length, encoding or JSON is invalid, or it repeats a key. Loaders refuse "
    "the file or, for duplicate keys, different parsers see different tensors. Writers "
    "never produce this: the file was damaged or edited by hand.",
)
TENSOR = Rule(
    "safetensors.tensor",
    Severity.HIGH,
    "safetensors tensor entry is malformed",
    "A tensor entry has an unknown dtype, a shape that is not a list of non-negative "
    "integers, or data offsets that disagree with its shape and dtype. Loaders refuse it "
    "or read the wrong bytes.",
)
LAYOUT = Rule(
    "safetensors.layout",
    Severity.HIGH,
    "safetensors data layout is inconsistent",
    "Tensors must cover the data area exactly, in order, with no gap, overlap or trailing "
    "bytes. Overlapping tensors alias each other's bytes; gaps and trailing bytes can hide "
    "content no loader looks at.",
)
UNUSUAL = Rule(
    "safetensors.unusual",
    Severity.LOW,
    "safetensors header has unusual formatting",
    "The header has leading whitespace, padding other than spaces, or fields the format "
    "does not define. Loaders accept it, writers do not produce it.",
)

#: The safetensors crate's MAX_HEADER_SIZE: loaders refuse larger headers.
CRATE_MAX_HEADER = 100_000_000
#: dtypes the safetensors crate knows, with their size in bits.
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64,
    "I64": 64, "U64": 64,
}  # fmt: skip
_METADATA = "__metadata__"
_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
_U64 = 1 << 64
_LISTED = 10  # problems of one kind listed one by one before a summary


def detect(data: memoryview, filename: str | None) -> bool:
    """A plausible header length followed by JSON (``{``, or ``[`` to report it as malformed)."""
    if len(data) < 10:
        return False
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > len(data) - 8:
        return False
    head = bytes(data[8 : 8 + min(n, 64)]).lstrip(b" \t\r\n")
    return head.startswith((b"{", b"["))


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Validate the header and the offsets it declares; never touch tensor bytes."""
    header = _read_header(data, ctx)
    if header is None:
        return
    n, obj = header
    if len(obj) > ctx.limits.metadata_entries:
        raise LimitExceeded(
            "metadata_entries", len(obj), ctx.limits.metadata_entries, subject=ctx.subject
        )
    metadata = obj.pop(_METADATA, None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        ctx.add(HEADER, "__metadata__ is not a map of strings to strings", key=_METADATA)
    spans = _check_tensors(obj, ctx)
    if spans is not None:
        _check_layout(spans, len(data) - 8 - n, ctx)


def _read_header(data: memoryview, ctx: ScanContext) -> tuple[int, dict[str, Any]] | None:
    n = int.from_bytes(data[:8], "little")
    if n > CRATE_MAX_HEADER:
        ctx.add(
            HEADER, f"header length {n} exceeds the loaders' cap of {CRATE_MAX_HEADER}", length=n
        )
        return None
    if n > ctx.limits.json_header_bytes:
        raise LimitExceeded(
            "json_header_bytes", n, ctx.limits.json_header_bytes, subject=ctx.subject
        )
    if n > len(data) - 8:
        ctx.add(
            HEADER, f"header length {n} runs past the end of the file", length=n, size=len(data)
        )
        return None
    raw = bytes(data[8 : 8 + n])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        ctx.add(HEADER, f"header is not UTF-8 (byte {exc.start})", offset=8 + exc.start)
        return None
    import json  # loaded on first use: most scans never meet a safetensors file

    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        ctx.add(HEADER, f"header repeats the key {exc.args[0]!r}", key=str(exc.args[0]))
        return None
    except (ValueError, RecursionError) as exc:
        ctx.add(HEADER, f"header is not valid JSON: {exc}")
        return None
    if not isinstance(obj, dict):
        ctx.add(HEADER, f"header is a JSON {type(obj).__name__}, not an object")
        return None
    if text[: len(text) - len(text.lstrip(" \t\r\n"))]:
        ctx.add(UNUSUAL, "header starts with whitespace before '{'")
    padding = text[len(text.rstrip(" \t\r\n")) :]
    if padding.strip(" "):
        ctx.add(UNUSUAL, "header padding contains whitespace other than spaces")
    return n, obj


def _check_tensors(obj: dict[str, Any], ctx: ScanContext) -> list[tuple[int, int, str]] | None:
    """Per-tensor checks; returns (begin, end, name) spans, or None when offsets are unusable."""
    spans: list[tuple[int, int, str]] = []
    problems = 0
    extra: set[str] = set()
    for name, info in obj.items():
        message = _tensor_problem(info)
        if message is not None:
            problems += 1
            if problems <= _LISTED:
                ctx.add(TENSOR, f"tensor {name!r}: {message}", tensor=name)
            continue
        extra |= set(info) - _FIELDS
        begin, end = info["data_offsets"]
        spans.append((begin, end, name))
    if problems > _LISTED:
        ctx.add(TENSOR, f"{problems - _LISTED} more malformed tensor entries", count=problems)
    if extra:
        ctx.add(UNUSUAL, f"tensor entries carry undefined fields {sorted(extra)[:_LISTED]}")
    return spans if problems == 0 else None


def _tensor_problem(info: object) -> str | None:
    if not isinstance(info, dict):
        return f"entry is a JSON {type(info).__name__}, not an object"
    missing = _FIELDS - set(info)
    if missing:
        return f"missing {sorted(missing)}"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return f"unknown dtype {str(dtype)[:40]!r}"
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        return f"shape {str(shape)[:80]} is not a list of non-negative integers"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)):
        return f"data_offsets {str(offsets)[:80]} is not a pair of non-negative integers"
    begin, end = offsets
    if end < begin:
        return f"data_offsets end {end} before begin {begin}"
    bits = DTYPE_BITS[dtype]
    for d in shape:
        bits *= d
        if bits >= _U64 * 8:
            return "shape times dtype size overflows 64 bits"
    if bits % 8:
        return f"{bits} bits of {dtype} do not fill whole bytes"
    if end - begin != bits // 8:
        return f"data_offsets span {end - begin} bytes, shape and dtype need {bits // 8}"
    return None


def _check_layout(spans: list[tuple[int, int, str]], data_size: int, ctx: ScanContext) -> None:
    spans.sort()
    cursor = 0
    problems: list[tuple[str, dict[str, Any]]] = []
    for begin, end, name in spans:
        if begin > cursor:
            problems.append(
                (
                    f"gap of {begin - cursor} bytes before tensor {name!r}",
                    {"tensor": name, "gap": [cursor, begin]},
                )
            )
        elif begin < cursor:  # the crate wants each tensor to start where the last ended
            problems.append(
                (
                    f"tensor {name!r} overlaps the previous tensor",
                    {"tensor": name, "data_offsets": [begin, end]},
                )
            )
        cursor = max(cursor, end)
    if cursor > data_size:
        problems.append(
            (
                f"tensors need {cursor} data bytes, the file has {data_size}",
                {"needed": cursor, "available": data_size},
            )
        )
    elif cursor < data_size:
        problems.append(
            (f"{data_size - cursor} bytes after the last tensor", {"trailing": data_size - cursor})
        )
    for message, evidence in problems[:_LISTED]:
        ctx.add(LAYOUT, message, **evidence)
    if len(problems) > _LISTED:
        ctx.add(LAYOUT, f"{len(problems) - _LISTED} more layout problems", count=len(problems))
