"""A minimal, strict, bounded reader of the protobuf wire format.

Enough to walk ONNX models and recognise other protobuf files (sentencepiece
``tokenizer.model``) without the ``protobuf`` or ``onnx`` packages and without
their recursion: the reader yields the fields of *one* message; callers walk
nested messages with an explicit stack and a depth limit.

Strict means: field number 0, field numbers past 2**29-1, the deprecated group
wire types (3, 4), the undefined ones (6, 7), varints longer than ten bytes or
past 64 bits, and a field running past its message are all :class:`WireError`.
Length-delimited values come back as zero-copy ``memoryview`` slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "I32",
    "I64",
    "LEN",
    "VARINT",
    "Field",
    "WireError",
    "fields",
    "iter_fields",
    "read_varint",
    "text",
]

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_MAX_FIELD = (1 << 29) - 1
_U64 = (1 << 64) - 1


class WireError(ValueError):
    """The bytes are not well-formed protobuf wire format."""


class Field(NamedTuple):
    """One field of a message: its number, wire type, value and byte offset."""

    number: int
    wire: int
    #: ``int`` for varint and fixed-width fields, ``memoryview`` for length-delimited ones.
    value: int | memoryview
    offset: int

    @property
    def data(self) -> memoryview:
        """The payload of a length-delimited field (raises for the other wire types)."""
        if not isinstance(self.value, memoryview):
            raise WireError(f"field {self.number} has wire type {self.wire}, expected bytes")
        return self.value

    @property
    def integer(self) -> int:
        """The value of a varint or fixed-width field (raises for length-delimited ones)."""
        if isinstance(self.value, memoryview):
            raise WireError(f"field {self.number} is length-delimited, expected a number")
        return self.value


def read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; returns (value, position after it)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(f"truncated varint at offset {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise WireError(f"varint longer than 10 bytes ending at offset {pos}")
    if result > _U64:
        raise WireError(f"varint exceeds 64 bits ending at offset {pos}")
    return result, pos


def iter_fields(buf: memoryview, *, max_fields: int) -> Iterator[Field]:
    """Yield the fields of the message that fills ``buf`` exactly.

    Raises :class:`WireError` on malformed input and past ``max_fields`` fields
    (the caller decides which limit that is; the reader has no opinion).
    """
    pos, end = 0, len(buf)
    count = 0
    while pos < end:
        count += 1
        if count > max_fields:
            raise WireError(f"more than {max_fields} fields in one message")
        start = pos
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or number > _MAX_FIELD:
            raise WireError(f"invalid field number {number} at offset {start}")
        value: int | memoryview
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
        elif wire in (I64, I32):
            width = 8 if wire == I64 else 4
            if pos + width > end:
                raise WireError(f"truncated fixed{width * 8} field {number} at offset {start}")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire == LEN:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise WireError(
                    f"field {number} at offset {start} claims {length} bytes, {end - pos} remain"
                )
            value = buf[pos : pos + length]
            pos += length
        else:
            kind = "group" if wire in (3, 4) else "undefined"
            raise WireError(f"{kind} wire type {wire} for field {number} at offset {start}")
        yield Field(number, wire, value, start)


def fields(buf: memoryview, *, max_fields: int) -> dict[int, list[Field]]:
    """All fields of one message grouped by number, in order of appearance."""
    out: dict[int, list[Field]] = {}
    for f in iter_fields(buf, max_fields=max_fields):
        out.setdefault(f.number, []).append(f)
    return out


def text(field: Field, limit: int | None = None) -> str:
    """A length-delimited field as text (UTF-8, errors replaced), cut at ``limit`` bytes."""
    data = field.data
    if limit is not None and len(data) > limit:
        data = data[:limit]
    return bytes(data).decode("utf-8", "replace")
