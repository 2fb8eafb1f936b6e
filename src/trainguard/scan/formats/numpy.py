"""NumPy ``.npy`` arrays (format versions 1.0, 2.0 and 3.0).

An ``.npy`` file is a magic string, a version, a header that is a Python
literal dict (``descr``, ``fortran_order``, ``shape``) and the raw array. The
header is parsed the way numpy parses it, with :func:`ast.literal_eval` on the
bounded header text (a literal parser: nothing is evaluated). When the dtype
holds Python objects anywhere (``'O'``, also inside a structured dtype) the
payload is a *pickle*: ``numpy.load(allow_pickle=True)`` unpickles it, so it is
reported and handed to the pickle scanner. Otherwise the payload must be
exactly ``prod(shape) * itemsize`` bytes; more is a hidden tail, less a file
numpy refuses. The ``numpy`` package is never imported.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from typing import TYPE_CHECKING

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity
from trainguard.scan._zip import looks_like_pickle

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "numpy"

OBJECT_ARRAY = Rule(
    "numpy.object-array",
    Severity.MEDIUM,
    "NumPy array of Python objects (a pickle)",
    "The array's dtype holds Python objects, so its payload is a pickle that "
    "numpy.load(allow_pickle=True) unpickles, running whatever it references. The payload "
    "was scanned as a pickle; prefer plain numeric dtypes.",
)
MALFORMED = Rule(
    "numpy.malformed-header",
    Severity.MEDIUM,
    "NumPy header is malformed",
    "The .npy header is not the dict numpy writes (or its dtype is not recognised), so what "
    "numpy.load does with the payload cannot be predicted from the header.",
)
SIZE_MISMATCH = Rule(
    "numpy.size-mismatch",
    Severity.MEDIUM,
    "NumPy payload size does not match its header",
    "The bytes after the header are not shape x itemsize: fewer and numpy refuses the file; "
    "more and the extra bytes are a tail no loader reads, a place to hide a payload.",
)

MAGIC = b"\x93NUMPY"
#: numpy.load refuses larger headers unless allow_pickle=True (numpy's _MAX_HEADER_SIZE).
NUMPY_MAX_HEADER = 10_000

# Compiled on first use (re caches it).
_SIZED = r"^[<>|=]?([biufcSaUVOmM?])(\d*)(\[[A-Za-z0-9]+\])?$"
_NAMED = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "float16": 2,
    "half": 2,
    "int32": 4,
    "uint32": 4,
    "float32": 4,
    "single": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "double": 8,
    "float": 8,
    "int": 8,
    "complex64": 8,
    "complex128": 16,
    "complex": 16,
    "float128": 16,
    "longdouble": 16,
    "complex256": 32,
    "datetime64": 8,
    "timedelta64": 8,
    "object": 8,
    "O": 8,
    "object_": 8,
}
_DEFAULT_SIZE = {"b": 1, "?": 1, "O": 8, "M": 8, "m": 8, "S": 0, "a": 0, "U": 0, "V": 0}


class _Dtype:
    """What matters of a dtype here: its size and whether it holds objects."""

    def __init__(self, itemsize: int, has_object: bool) -> None:
        self.itemsize = itemsize
        self.has_object = has_object


def parse_descr(descr: object, depth: int = 0) -> _Dtype:
    """Size and object-ness of a ``descr`` (string, or structured list); raises ``ValueError``."""
    if depth > 32:
        raise ValueError("structured dtype nests too deeply")
    if isinstance(descr, str):
        return _parse_string(descr)
    if isinstance(descr, list):
        size, has_object = 0, False
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise ValueError(f"bad structured field {field!r}")
            sub = parse_descr(field[1], depth + 1)
            count = 1
            if len(field) == 3:
                shape = field[2] if isinstance(field[2], tuple) else (field[2],)
                if not all(isinstance(n, int) and n >= 0 for n in shape):
                    raise ValueError(f"bad field shape {field[2]!r}")
                count = math.prod(shape)
            size += sub.itemsize * count
            has_object = has_object or sub.has_object
        return _Dtype(size, has_object)
    raise ValueError(f"descr of type {type(descr).__name__}")


def _parse_string(text: str) -> _Dtype:
    if "," in text:  # "f8,i4": numpy's comma form of a structured dtype
        parts = [_parse_string(p.strip()) for p in text.split(",")]
        return _Dtype(sum(p.itemsize for p in parts), any(p.has_object for p in parts))
    bare = text.lstrip("<>|=")
    if bare.split("[")[0] in _NAMED:
        return _Dtype(_NAMED[bare.split("[")[0]], bare.startswith("O") or "object" in bare)
    match = re.match(_SIZED, text)
    if match is None:
        raise ValueError(f"unrecognised dtype {text!r}")
    kind, digits = match.group(1), match.group(2)
    if digits:
        size = int(digits) * (4 if kind == "U" else 1)
    elif kind in _DEFAULT_SIZE:
        size = _DEFAULT_SIZE[kind]
    else:
        raise ValueError(f"dtype {text!r} has no size")
    return _Dtype(size, kind == "O")


def detect(data: memoryview, filename: str | None) -> bool:
    return bytes(data[:6]) == MAGIC


def read_header(data: memoryview, ctx: ScanContext) -> tuple[dict[str, object], int]:
    """The header dict and the payload offset; raises ``ValueError`` when unreadable."""
    major = data[6] if len(data) > 7 else -1
    if major == 1:
        (length,) = struct.unpack_from("<H", data, 8)
        start = 10
    elif major in (2, 3):
        (length,) = struct.unpack_from("<I", data, 8)
        start = 12
    else:
        raise ValueError(f"unknown .npy format version {major}")
    if length > ctx.limits.npy_header_bytes:
        limit = ctx.limits.npy_header_bytes
        raise LimitExceeded("npy_header_bytes", length, limit, subject=ctx.subject)
    if start + length > len(data):
        raise ValueError(f"header of {length} bytes runs past the end of the file")
    raw = bytes(data[start : start + length])
    text = raw.decode("utf-8" if major == 3 else "latin1")
    header = ast.literal_eval(text)
    if not isinstance(header, dict):
        raise ValueError(f"header is a {type(header).__name__}, not a dict")
    if length > NUMPY_MAX_HEADER:
        ctx.add(
            MALFORMED,
            f"header of {length} bytes: numpy.load refuses it unless allow_pickle=True",
            header_bytes=length,
        )
    return header, start + length


def scan(data: memoryview, ctx: ScanContext) -> None:
    try:
        header, offset = read_header(data, ctx)
    except (ValueError, SyntaxError, struct.error, UnicodeDecodeError, MemoryError) as exc:
        ctx.add(MALFORMED, f"header unreadable: {type(exc).__name__}: {exc}")
        newline = bytes(data[: 1 << 16]).find(b"\n", 8)
        if newline >= 0:
            _scan_unknown_payload(data[newline + 1 :], ctx)
        return
    problems = []
    if set(header) != {"descr", "fortran_order", "shape"}:
        problems.append(f"keys {sorted(map(str, header))}")
    shape = header.get("shape")
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        problems.append(f"shape {shape!r}")
        shape = None
    if not isinstance(header.get("fortran_order"), bool):
        problems.append(f"fortran_order {header.get('fortran_order')!r}")
    try:
        dtype: _Dtype | None = parse_descr(header.get("descr"))
    except (ValueError, TypeError) as exc:
        problems.append(str(exc))
        dtype = None
    if problems:
        ctx.add(MALFORMED, "header is not what numpy writes: " + "; ".join(problems))
    payload = data[offset:]
    if dtype is None:
        _scan_unknown_payload(payload, ctx)
        return
    if dtype.has_object:
        ctx.add(
            OBJECT_ARRAY,
            f"dtype {header.get('descr')!r} holds Python objects: the {len(payload)}-byte "
            "payload is a pickle (numpy.load needs allow_pickle=True)",
            descr=str(header.get("descr")),
        )
        ctx.scan_nested(payload, "<object payload>", "pickle")
        return
    if shape is not None:
        _check_size(payload, math.prod(shape) * dtype.itemsize, ctx)


def _check_size(payload: memoryview, expected: int, ctx: ScanContext) -> None:
    if len(payload) < expected:
        ctx.add(
            SIZE_MISMATCH,
            f"payload holds {len(payload)} bytes, the header needs {expected}: numpy refuses it",
            expected=expected,
            found=len(payload),
        )
    elif len(payload) > expected:
        tail = payload[expected:]
        ctx.add(
            SIZE_MISMATCH,
            f"{len(tail)} bytes follow the array data; no loader reads them",
            expected=expected,
            found=len(payload),
        )
        ctx.scan_nested(tail, "<trailing>", "pickle" if looks_like_pickle(tail) else None)


def _scan_unknown_payload(payload: memoryview, ctx: ScanContext) -> None:
    """With no usable dtype, a payload that starts like a pickle is still scanned as one."""
    if len(payload) >= 2 and payload[0] == 0x80 and 2 <= payload[1] <= 5:
        ctx.scan_nested(payload, "<payload>", "pickle")
