"""The pickle opcode table and a strict, streaming opcode reader (protocols 0-5).

The reader decodes exactly what CPython's ``_pickle`` unpickler would read for
each opcode, including the protocol-0 text quirks (``INT`` ``01``/``00`` are
booleans, ``LONG`` may end in ``L``, ``STRING`` must be quoted and is
escape-decoded, ``UNICODE`` is raw-unicode-escape). It never builds objects:
big ``bytes`` literals come back as zero-copy ``memoryview`` slices.

Truncation, an unknown opcode or a malformed argument raise
:class:`PickleParseError` with the byte offset of the offending opcode.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

__all__ = [
    "OPCODES",
    "Blob",
    "ByteArray",
    "OpInfo",
    "OpReader",
    "OversizeInt",
    "PickleParseError",
    "Str8",
    "as_bytes_view",
    "decode_op",
]


class PickleParseError(Exception):
    """The byte stream is not a well-formed pickle at ``offset``.

    ``kind`` is ``"truncated"``, ``"unknown-opcode"`` or ``"malformed"``.
    """

    def __init__(self, kind: str, offset: int, message: str) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.kind = kind
        self.offset = offset
        self.message = message


class Str8:
    """A protocol-0/1 8-bit string (``STRING``/``BINSTRING``/``SHORT_BINSTRING``).

    Python 3 decodes it with the unpickler's ``encoding`` (ASCII by default,
    ``bytes`` or ``latin1`` on request), so it may end up as ``str`` or ``bytes``.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes | Blob) -> None:
        self.data = data

    def tobytes(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else self.data.tobytes()

    def text(self) -> str:
        """The value as the default unpickler would see it (latin-1 never fails)."""
        return self.tobytes().decode("latin-1")

    def __repr__(self) -> str:
        return f"Str8({self.tobytes()[:64]!r})"


class OversizeInt:
    """A ``LONG4`` literal too big to decode cheaply; only its size is kept."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"<int of {self.nbytes} bytes>"


class Blob:
    """A byte string inside the scanned buffer, kept as an offset (zero-copy).

    Holding offsets instead of ``memoryview`` slices means no view of the
    caller's buffer (often an mmap) outlives the scan.
    """

    __slots__ = ("buf", "start", "stop")

    def __init__(self, buf: memoryview, start: int, stop: int) -> None:
        self.buf = buf
        self.start = start
        self.stop = stop

    def __len__(self) -> int:
        return self.stop - self.start

    def tobytes(self) -> bytes:
        return bytes(self.buf[self.start : self.stop])

    def __repr__(self) -> str:
        return f"<{len(self)} bytes at offset {self.start}>"


class ByteArray:
    """A ``BYTEARRAY8`` literal."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | Blob) -> None:
        self.data = data


class OpInfo(NamedTuple):
    """One opcode: its byte, pickletools name, argument kind and first protocol."""

    code: int
    name: str
    arg: int
    proto: int


# Argument kinds: how many bytes follow the opcode and how to decode them.
A_NONE = 0
A_U1 = 1
A_U2 = 2
A_I4 = 3
A_U4 = 4
A_U8 = 5
A_F8 = 6
A_LONG1 = 7
A_LONG4 = 8
A_STR1 = 9  # SHORT_BINSTRING
A_STR4 = 10  # BINSTRING (signed length)
A_BYTES1 = 11
A_BYTES4 = 12
A_BYTES8 = 13
A_UNI1 = 14
A_UNI4 = 15
A_UNI8 = 16
A_INTNL = 17  # INT: decimal line, "00"/"01" booleans
A_LONGNL = 18  # LONG: decimal line, optional trailing "L"
A_FLOATNL = 19
A_STRINGNL = 20  # STRING: quoted, escape-decoded line
A_UNICODENL = 21  # UNICODE: raw-unicode-escape line
A_LINE = 22  # PERSID: ASCII line
A_LINE2 = 23  # GLOBAL/INST: two UTF-8 lines
A_MEMONL = 24  # GET/PUT: decimal line
A_BYTEARRAY8 = 25

_TABLE: tuple[tuple[bytes, str, int, int], ...] = (
    (b"I", "INT", A_INTNL, 0),
    (b"J", "BININT", A_I4, 1),
    (b"K", "BININT1", A_U1, 1),
    (b"M", "BININT2", A_U2, 1),
    (b"L", "LONG", A_LONGNL, 0),
    (b"\x8a", "LONG1", A_LONG1, 2),
    (b"\x8b", "LONG4", A_LONG4, 2),
    (b"S", "STRING", A_STRINGNL, 0),
    (b"T", "BINSTRING", A_STR4, 1),
    (b"U", "SHORT_BINSTRING", A_STR1, 1),
    (b"B", "BINBYTES", A_BYTES4, 3),
    (b"C", "SHORT_BINBYTES", A_BYTES1, 3),
    (b"\x8e", "BINBYTES8", A_BYTES8, 4),
    (b"\x96", "BYTEARRAY8", A_BYTEARRAY8, 5),
    (b"\x97", "NEXT_BUFFER", A_NONE, 5),
    (b"\x98", "READONLY_BUFFER", A_NONE, 5),
    (b"N", "NONE", A_NONE, 0),
    (b"\x88", "NEWTRUE", A_NONE, 2),
    (b"\x89", "NEWFALSE", A_NONE, 2),
    (b"V", "UNICODE", A_UNICODENL, 0),
    (b"\x8c", "SHORT_BINUNICODE", A_UNI1, 4),
    (b"X", "BINUNICODE", A_UNI4, 1),
    (b"\x8d", "BINUNICODE8", A_UNI8, 4),
    (b"F", "FLOAT", A_FLOATNL, 0),
    (b"G", "BINFLOAT", A_F8, 1),
    (b"]", "EMPTY_LIST", A_NONE, 1),
    (b"a", "APPEND", A_NONE, 0),
    (b"e", "APPENDS", A_NONE, 1),
    (b"l", "LIST", A_NONE, 0),
    (b")", "EMPTY_TUPLE", A_NONE, 1),
    (b"t", "TUPLE", A_NONE, 0),
    (b"\x85", "TUPLE1", A_NONE, 2),
    (b"\x86", "TUPLE2", A_NONE, 2),
    (b"\x87", "TUPLE3", A_NONE, 2),
    (b"}", "EMPTY_DICT", A_NONE, 1),
    (b"d", "DICT", A_NONE, 0),
    (b"s", "SETITEM", A_NONE, 0),
    (b"u", "SETITEMS", A_NONE, 1),
    (b"\x8f", "EMPTY_SET", A_NONE, 4),
    (b"\x90", "ADDITEMS", A_NONE, 4),
    (b"\x91", "FROZENSET", A_NONE, 4),
    (b"0", "POP", A_NONE, 0),
    (b"2", "DUP", A_NONE, 0),
    (b"(", "MARK", A_NONE, 0),
    (b"1", "POP_MARK", A_NONE, 1),
    (b"g", "GET", A_MEMONL, 0),
    (b"h", "BINGET", A_U1, 1),
    (b"j", "LONG_BINGET", A_U4, 1),
    (b"p", "PUT", A_MEMONL, 0),
    (b"q", "BINPUT", A_U1, 1),
    (b"r", "LONG_BINPUT", A_U4, 1),
    (b"\x94", "MEMOIZE", A_NONE, 4),
    (b"\x82", "EXT1", A_U1, 2),
    (b"\x83", "EXT2", A_U2, 2),
    (b"\x84", "EXT4", A_I4, 2),
    (b"c", "GLOBAL", A_LINE2, 0),
    (b"\x93", "STACK_GLOBAL", A_NONE, 4),
    (b"R", "REDUCE", A_NONE, 0),
    (b"b", "BUILD", A_NONE, 0),
    (b"i", "INST", A_LINE2, 0),
    (b"o", "OBJ", A_NONE, 1),
    (b"\x81", "NEWOBJ", A_NONE, 2),
    (b"\x92", "NEWOBJ_EX", A_NONE, 4),
    (b"\x80", "PROTO", A_U1, 2),
    (b".", "STOP", A_NONE, 0),
    (b"\x95", "FRAME", A_U8, 4),
    (b"P", "PERSID", A_LINE, 0),
    (b"Q", "BINPERSID", A_NONE, 1),
)

#: Every opcode, by byte value.
OPCODES: dict[int, OpInfo] = {
    code[0]: OpInfo(code[0], name, arg, proto) for code, name, arg, proto in _TABLE
}

#: Argument kind by byte value; -1 for bytes that are not opcodes.
ARG_KIND: tuple[int, ...] = tuple(OPCODES[b].arg if b in OPCODES else -1 for b in range(256))

# The opcode bytes the machine dispatches on, as module constants.
STOP = ord(".")
FRAME = 0x95

#: Longest integer literal decoded to a Python int (a bigger one is just counted).
MAX_INT_BYTES = 4096
#: Longest byte string copied out of the buffer; longer ones become a Blob.
SMALL_BYTES = 256

_OCTAL = rb"\s*[+-]?0[0-7]+\s*"  # compiled on first use (re caches it)
_U2 = struct.Struct("<H")
_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
_F8 = struct.Struct(">d")
_FIXED = {
    A_U2: (2, _U2.unpack_from),
    A_I4: (4, _I4.unpack_from),
    A_U4: (4, _U4.unpack_from),
    A_U8: (8, _U8.unpack_from),
    A_F8: (8, _F8.unpack_from),
}
_SIZED = frozenset(
    {A_UNI1, A_UNI4, A_UNI8, A_LONG1, A_LONG4, A_STR1, A_STR4, A_BYTES1, A_BYTES4, A_BYTES8}
    | {A_BYTEARRAY8}
)


def _readline(data: memoryview, pos: int, end: int, start: int) -> tuple[bytes, int]:
    """The bytes up to the next newline (excluded) and the offset after it.

    Searches a growing window so a long protocol-0 line costs linear time.
    """
    step = 128
    while True:
        stop = min(end, pos + step)
        chunk = bytes(data[pos:stop])
        i = chunk.find(b"\n")
        if i >= 0:
            return chunk[:i], pos + i + 1
        if stop >= end:
            raise PickleParseError("truncated", start, "line argument has no terminating newline")
        step *= 4


def _decimal(line: bytes, start: int, what: str) -> int:
    # C's load_int uses strtol(base 0) first: "010" is octal there.
    try:
        return int(line, 0)
    except ValueError:
        pass
    if re.fullmatch(_OCTAL, line):
        return int(line.strip(), 8)
    try:
        return int(line)
    except ValueError:
        raise PickleParseError("malformed", start, f"{what} argument is not an integer") from None


def _decode_text_arg(kind: int, line: bytes, start: int) -> Any:
    """Decode the argument of a one-line protocol-0 opcode."""
    if kind == A_INTNL:
        if line == b"00":
            return False
        if line == b"01":
            return True
        return _decimal(line, start, "INT")
    if kind == A_MEMONL:
        try:
            return int(line)
        except ValueError:
            raise PickleParseError("malformed", start, "memo index is not an integer") from None
    if kind == A_LONGNL:
        if line[-1:] == b"L":
            line = line[:-1]
        try:
            return int(line, 0)
        except ValueError:
            raise PickleParseError("malformed", start, "LONG argument is not an integer") from None
    if kind == A_FLOATNL:
        try:
            return float(line)
        except ValueError:
            raise PickleParseError("malformed", start, "FLOAT argument is not a float") from None
    if kind == A_STRINGNL:
        if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
            raise PickleParseError("malformed", start, "STRING argument must be quoted")
        try:
            return Str8(codecs.escape_decode(line[1:-1])[0])
        except ValueError:
            raise PickleParseError("malformed", start, "STRING argument has a bad escape") from None
    if kind == A_UNICODENL:
        try:
            return str(line, "raw-unicode-escape")
        except UnicodeDecodeError:
            raise PickleParseError(
                "malformed", start, "UNICODE argument has a bad escape"
            ) from None
    # A_LINE: PERSID ids must be ASCII in protocol 0.
    try:
        return line.decode("ascii")
    except UnicodeDecodeError:
        raise PickleParseError("malformed", start, "PERSID argument is not ASCII") from None


def _size(data: memoryview, kind: int, pos: int, end: int, start: int) -> tuple[int, int]:
    """Read the length prefix of a sized argument; return (data offset, size)."""
    if kind in (A_UNI1, A_STR1, A_BYTES1, A_LONG1):
        if pos >= end:
            raise PickleParseError("truncated", start, "length prefix runs past the end")
        return pos + 1, data[pos]
    if kind in (A_UNI8, A_BYTES8, A_BYTEARRAY8):
        width, unpack = 8, _U8.unpack_from
    elif kind in (A_STR4, A_LONG4):
        width, unpack = 4, _I4.unpack_from
    else:
        width, unpack = 4, _U4.unpack_from
    if pos + width > end:
        raise PickleParseError("truncated", start, "length prefix runs past the end")
    size: int = unpack(data, pos)[0]
    if size < 0:
        raise PickleParseError("malformed", start, "negative length")
    return pos + width, size


def decode_op(data: memoryview, pos: int, end: int) -> tuple[int, Any, int]:
    """Decode the opcode at ``pos``: ``(opcode, argument, offset after it)``.

    ``data`` must be a one-dimensional byte view. Byte strings longer than
    :data:`SMALL_BYTES` come back as :class:`Blob` (no copy).
    """
    if pos >= end:
        raise PickleParseError("truncated", pos, "pickle ends before STOP")
    code = data[pos]
    kind = ARG_KIND[code]
    start = pos
    pos += 1
    if kind == A_NONE:
        return code, None, pos
    if kind == A_U1:
        if pos >= end:
            raise PickleParseError("truncated", start, "argument runs past the end")
        return code, data[pos], pos + 1
    if kind in _FIXED:
        width, unpack = _FIXED[kind]
        if pos + width > end:
            raise PickleParseError("truncated", start, "argument runs past the end")
        return code, unpack(data, pos)[0], pos + width
    if kind in _SIZED:
        pos, size = _size(data, kind, pos, end, start)
        stop = pos + size
        if stop > end:
            raise PickleParseError("truncated", start, "argument runs past the end")
        return code, _sized_value(data, kind, pos, stop, start), stop
    if kind == A_LINE2:
        module, pos = _readline(data, pos, end, start)
        name, pos = _readline(data, pos, end, start)
        try:
            return code, (module.decode("utf-8"), name.decode("utf-8")), pos
        except UnicodeDecodeError:
            raise PickleParseError("malformed", start, "global name is not UTF-8") from None
    if kind >= A_INTNL:
        line, pos = _readline(data, pos, end, start)
        return code, _decode_text_arg(kind, line, start), pos
    raise PickleParseError("unknown-opcode", start, f"unknown opcode 0x{code:02x}")


def _sized_value(data: memoryview, kind: int, pos: int, stop: int, start: int) -> Any:
    if kind in (A_UNI1, A_UNI4, A_UNI8):
        try:
            return str(data[pos:stop], "utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise PickleParseError("malformed", start, "string is not UTF-8") from None
    if kind in (A_LONG1, A_LONG4):
        if stop - pos > MAX_INT_BYTES:
            return OversizeInt(stop - pos)
        return int.from_bytes(data[pos:stop], "little", signed=True)
    raw: bytes | Blob = (
        bytes(data[pos:stop]) if stop - pos <= SMALL_BYTES else Blob(data, pos, stop)
    )
    if kind in (A_STR1, A_STR4):
        return Str8(raw)
    if kind == A_BYTEARRAY8:
        return ByteArray(raw)
    return raw


class OpReader:
    """Iterate ``(offset, opcode, argument)`` over one pickle stream.

    Iteration ends after ``STOP``; :attr:`pos` is then the offset just past it.
    A caller may assign :attr:`pos` between two opcodes to skip bytes.

    Example:
        >>> [(o, chr(c), a) for o, c, a in OpReader(b"K\\x07.")]
        [(0, 'K', 7), (2, '.', None)]
    """

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = as_bytes_view(data)
        self.pos = pos
        self.end = len(self.data) if end is None else min(end, len(self.data))

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        data, end = self.data, self.end
        while True:
            start = self.pos
            code, arg, self.pos = decode_op(data, start, end)
            yield start, code, arg
            if code == STOP:
                return


def as_bytes_view(data: bytes | bytearray | memoryview) -> memoryview:
    """A one-dimensional unsigned-byte view of ``data`` (no copy)."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view
