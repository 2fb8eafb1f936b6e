"""The opcode reader against pickletools, opcode by opcode and protocol by protocol."""

from __future__ import annotations

import collections
import datetime
import pickle
import pickletools
import struct
from typing import Any

import pytest

from trainguard.scan.pickle import OPCODES, OpReader, PickleParseError
from trainguard.scan.pickle._opcodes import Blob, ByteArray, OversizeInt, Str8


def _norm(name: str, arg: Any) -> Any:
    """Our argument in pickletools' representation."""
    if isinstance(arg, Str8):
        return arg.tobytes().decode("latin-1")
    if isinstance(arg, Blob):
        return arg.tobytes()
    if isinstance(arg, ByteArray):
        data = arg.data
        return bytearray(data if isinstance(data, bytes) else data.tobytes())
    if name in ("GLOBAL", "INST"):
        return f"{arg[0]} {arg[1]}"
    return arg


def _compare(data: bytes) -> list[str]:
    ours = [
        (pos, OPCODES[code].name, _norm(OPCODES[code].name, arg))
        for pos, code, arg in OpReader(data)
    ]
    theirs = []
    for op, arg, pos in pickletools.genops(data):
        if op.name in ("STRING", "BINSTRING", "SHORT_BINSTRING") and isinstance(arg, bytes):
            arg = arg.decode("latin-1")
        theirs.append((pos, op.name, arg))
    assert ours == theirs
    return [name for _, name, _ in ours]


SAMPLE: dict[str, Any] = {
    "ints": [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31, 2**64, -(2**100)],
    "floats": [0.0, -1.5, 1e300, float("inf")],
    "text": ["", "a", "é€😀", "x" * 300, "line\nbreak", "quote'\""],
    "bytes": [b"", b"\x00\xff", b"b" * 300],
    "bytearray": bytearray(b"ba"),
    "tuple": (1, (2, (3,)), ()),
    "set": {1, 2},
    "frozenset": frozenset({3}),
    "dict": {1: {"nested": [None, True, False]}},
    "ordered": collections.OrderedDict(a=1),
    "when": datetime.date(2024, 1, 2),
}
SHARED = [1, 2]
SAMPLE["shared"] = [SHARED, SHARED]


@pytest.mark.parametrize("proto", range(6))
def test_reader_matches_pickletools_for_every_protocol(proto: int) -> None:
    names = _compare(pickle.dumps(SAMPLE, protocol=proto))
    assert names[-1] == "STOP"
    if proto >= 2:
        assert names[0] == "PROTO"
    if proto >= 4:
        assert "FRAME" in names and "MEMOIZE" in names and "STACK_GLOBAL" in names


def test_opcode_table_is_pickletools_table() -> None:
    theirs = {op.code.encode("latin-1")[0]: (op.name, op.proto) for op in pickletools.opcodes}
    ours = {code: (info.name, info.proto) for code, info in OPCODES.items()}
    assert ours == theirs


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"I01\n.", True),
        (b"I00\n.", False),
        (b"I42\n.", 42),
        (b"I-7\n.", -7),
        (b"I010\n.", 8),  # C's strtol(base 0): a leading zero is octal
        (b"L12L\n.", 12),
        (b"L-12\n.", -12),
        (b"F1.5\n.", 1.5),
        (b"V\\u00e9t\xe9\n.", "\u00e9t\u00e9"),  # raw-unicode-escape: \\u only
        (b"K\xff.", 255),
        (b"M\x01\x02.", 0x0201),
        (b"J\xff\xff\xff\xff.", -1),
        (b"G?\xf8\x00\x00\x00\x00\x00\x00.", 1.5),
        (b"\x8a\x02\x00\x80.", -32768),
        (b"\x8b\x01\x00\x00\x00\x7f.", 127),
        (b"C\x02hi.", b"hi"),
        (b"\x8c\x02hi.", "hi"),
        (b"\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi.", "hi"),
        (b"\x8e\x02\x00\x00\x00\x00\x00\x00\x00hi.", b"hi"),
        (b"Pid\n.", "id"),
        (b"\x82\x05.", 5),
        (b"\x83\x05\x01.", 0x105),
        (b"\x84\x05\x00\x00\x00.", 5),
        (b"g3\n.", 3),
        (b"p3\n.", 3),
        (b"j\x01\x00\x00\x00.", 1),
    ],
)
def test_single_opcode_arguments(data: bytes, expected: Any) -> None:
    ops = list(OpReader(data))
    assert ops[0][2] == expected and type(ops[0][2]) is type(expected)
    assert OPCODES[ops[-1][1]].name == "STOP"


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"S'it''s'\n.", None),  # inner quote: still quoted at both ends
        (b"S'a\\nb'\n.", "a\nb"),
        (b'S"dq"\n.', "dq"),
        (b"S'\\x41'\n.", "A"),
    ],
)
def test_string_quoting_and_escapes(data: bytes, text: str | None) -> None:
    arg = next(iter(OpReader(data)))[2]
    assert isinstance(arg, Str8)
    if text is not None:
        assert arg.text() == text


def test_global_and_inst_read_two_lines() -> None:
    ops = list(OpReader(b"cos\nsystem\n(iposix\nsystem\n."))
    assert ops[0][2] == ("os", "system")
    assert ops[2][2] == ("posix", "system")


def test_big_bytes_are_zero_copy_blobs() -> None:
    payload = bytes(range(256)) * 8
    data = pickle.dumps(payload, protocol=4)
    view = memoryview(data)
    reader = OpReader(view)
    blob = next(arg for _, _, arg in reader if isinstance(arg, Blob))
    assert blob.buf is reader.data and len(blob) == len(payload)
    assert blob.tobytes() == payload
    assert data[blob.start : blob.stop] == payload


def test_protocol_5_buffers_and_bytearray8() -> None:
    big = bytearray(b"z" * 1000)
    data = pickle.dumps(big, protocol=5)
    names = _compare(data)
    assert "BYTEARRAY8" in names
    buffers: list[pickle.PickleBuffer] = []
    oob = pickle.dumps(pickle.PickleBuffer(b"ro"), protocol=5, buffer_callback=buffers.append)
    assert {"NEXT_BUFFER", "READONLY_BUFFER"} <= set(_compare(oob))


def test_long4_too_big_is_counted_not_decoded() -> None:
    size = 10_000
    data = b"\x8b" + struct.pack("<i", size) + b"\x01" * size + b"."
    arg = next(iter(OpReader(data)))[2]
    assert isinstance(arg, OversizeInt) and arg.nbytes == size


def test_every_prefix_of_a_pickle_is_truncated_at_a_valid_offset() -> None:
    data = pickle.dumps(SAMPLE, protocol=2)
    opcode_starts = {pos for _, _, pos in pickletools.genops(data)}
    for cut in range(len(data)):
        with pytest.raises(PickleParseError) as info:
            list(OpReader(data[:cut]))
        assert info.value.kind == "truncated"
        assert info.value.offset in opcode_starts or info.value.offset == cut


@pytest.mark.parametrize(
    ("data", "kind", "offset"),
    [
        (b"K\x01\xff.", "unknown-opcode", 2),
        (b"S'unquoted\n.", "malformed", 0),
        (b"Sbare\n.", "malformed", 0),
        (b"Ixyz\n.", "malformed", 0),
        (b"Lxyz\n.", "malformed", 0),
        (b"Fnot-a-float\n.", "malformed", 0),
        (b"gx\n.", "malformed", 0),
        (b"N\x8c\x02\xff\xfe.", "malformed", 1),
        (b"cos\n\xf8\n.", "malformed", 0),
        (b"P\xe9\n.", "malformed", 0),
        (b"T\xff\xff\xff\xff.", "malformed", 0),
        (b"\x8b\xff\xff\xff\xff.", "malformed", 0),
        (b"X\x10\x00\x00\x00abc", "truncated", 0),
        (b"cos\nsystem", "truncated", 0),
        (b"N", "truncated", 1),
    ],
)
def test_parse_errors_carry_kind_and_offset(data: bytes, kind: str, offset: int) -> None:
    with pytest.raises(PickleParseError) as info:
        list(OpReader(data))
    assert (info.value.kind, info.value.offset) == (kind, offset)


def test_reader_stops_at_stop_and_reports_end() -> None:
    reader = OpReader(b"K\x01.garbage")
    assert len(list(reader)) == 2
    assert reader.pos == 3


#: One encoded instance of every opcode (followed by STOP where needed for genops).
EVERY_OPCODE: dict[str, bytes] = {
    "INT": b"I5\n",
    "BININT": b"J\x01\x00\x00\x00",
    "BININT1": b"K\x01",
    "BININT2": b"M\x01\x00",
    "LONG": b"L5L\n",
    "LONG1": b"\x8a\x01\x05",
    "LONG4": b"\x8b\x01\x00\x00\x00\x05",
    "STRING": b"S'x'\n",
    "BINSTRING": b"T\x01\x00\x00\x00x",
    "SHORT_BINSTRING": b"U\x01x",
    "BINBYTES": b"B\x01\x00\x00\x00x",
    "SHORT_BINBYTES": b"C\x01x",
    "BINBYTES8": b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00x",
    "BYTEARRAY8": b"\x96\x01\x00\x00\x00\x00\x00\x00\x00x",
    "NEXT_BUFFER": b"\x97",
    "READONLY_BUFFER": b"\x98",
    "NONE": b"N",
    "NEWTRUE": b"\x88",
    "NEWFALSE": b"\x89",
    "UNICODE": b"Vx\n",
    "SHORT_BINUNICODE": b"\x8c\x01x",
    "BINUNICODE": b"X\x01\x00\x00\x00x",
    "BINUNICODE8": b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00x",
    "FLOAT": b"F1.0\n",
    "BINFLOAT": b"G?\xf0\x00\x00\x00\x00\x00\x00",
    "EMPTY_LIST": b"]",
    "APPEND": b"a",
    "APPENDS": b"e",
    "LIST": b"l",
    "EMPTY_TUPLE": b")",
    "TUPLE": b"t",
    "TUPLE1": b"\x85",
    "TUPLE2": b"\x86",
    "TUPLE3": b"\x87",
    "EMPTY_DICT": b"}",
    "DICT": b"d",
    "SETITEM": b"s",
    "SETITEMS": b"u",
    "EMPTY_SET": b"\x8f",
    "ADDITEMS": b"\x90",
    "FROZENSET": b"\x91",
    "POP": b"0",
    "DUP": b"2",
    "MARK": b"(",
    "POP_MARK": b"1",
    "GET": b"g1\n",
    "BINGET": b"h\x01",
    "LONG_BINGET": b"j\x01\x00\x00\x00",
    "PUT": b"p1\n",
    "BINPUT": b"q\x01",
    "LONG_BINPUT": b"r\x01\x00\x00\x00",
    "MEMOIZE": b"\x94",
    "EXT1": b"\x82\x01",
    "EXT2": b"\x83\x01\x00",
    "EXT4": b"\x84\x01\x00\x00\x00",
    "GLOBAL": b"cm\nn\n",
    "STACK_GLOBAL": b"\x93",
    "REDUCE": b"R",
    "BUILD": b"b",
    "INST": b"im\nn\n",
    "OBJ": b"o",
    "NEWOBJ": b"\x81",
    "NEWOBJ_EX": b"\x92",
    "PROTO": b"\x80\x04",
    "STOP": b"",
    "FRAME": b"\x95\x01\x00\x00\x00\x00\x00\x00\x00",
    "PERSID": b"Px\n",
    "BINPERSID": b"Q",
}


def test_every_opcode_has_an_example() -> None:
    assert set(EVERY_OPCODE) == {info.name for info in OPCODES.values()}


@pytest.mark.parametrize("name", sorted(EVERY_OPCODE))
def test_every_opcode_decodes_like_pickletools(name: str) -> None:
    data = EVERY_OPCODE[name] + b"."
    ops = _compare(data)
    assert ops == ([name, "STOP"] if name != "STOP" else ["STOP"])
