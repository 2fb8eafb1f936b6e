"""Pickle samples for the tests, assembled opcode by opcode (nothing is unpickled here).

``P`` is a tiny assembler: each method appends one opcode. ``call`` emits what
``pickle.dumps`` writes for ``__reduce__`` returning ``(module.name, args)``
in a given protocol (GLOBAL for 0-3, STACK_GLOBAL with a possibly dotted name
for 4+), with string, bytes, int, list and nested-call arguments.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Union

Arg = Union[str, bytes, int, None, "Raw", list["Arg"], tuple["Arg", ...], dict[str, "Arg"]]


class Raw:
    """Pre-assembled opcodes used as an argument (a nested call, a global)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class P:
    """Append opcodes fluently; ``bytes(p)`` is the pickle."""

    def __init__(self, proto: int | None = None) -> None:
        self.buf = bytearray()
        if proto is not None and proto >= 2:
            self.buf += b"\x80" + bytes([proto])

    def __bytes__(self) -> bytes:
        return bytes(self.buf)

    def raw(self, data: bytes) -> P:
        self.buf += data
        return self

    def op(self, name: str, arg: bytes = b"") -> P:
        import pickle

        return self.raw(getattr(pickle, name) + arg)

    # values
    def uni(self, text: str) -> P:
        data = text.encode("utf-8", "surrogatepass")
        if len(data) < 256:
            return self.raw(b"\x8c" + bytes([len(data)]) + data)
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def binuni(self, text: str) -> P:
        data = text.encode()
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def text_uni(self, text: str) -> P:
        return self.raw(b"V" + text.encode("raw-unicode-escape") + b"\n")

    def string(self, text: str) -> P:
        return self.raw(b"S" + repr(text).encode() + b"\n")

    def short_binstring(self, data: bytes) -> P:
        return self.raw(b"U" + bytes([len(data)]) + data)

    def binbytes(self, data: bytes) -> P:
        return self.raw(b"B" + struct.pack("<I", len(data)) + data)

    def int_(self, value: int) -> P:
        if 0 <= value < 256:
            return self.raw(b"K" + bytes([value]))
        return self.raw(b"J" + struct.pack("<i", value))

    def none(self) -> P:
        return self.raw(b"N")

    # structure
    def mark(self) -> P:
        return self.raw(b"(")

    def tuple(self) -> P:
        return self.raw(b"t")

    def tuple1(self) -> P:
        return self.raw(b"\x85")

    def tuple2(self) -> P:
        return self.raw(b"\x86")

    def empty_dict(self) -> P:
        return self.raw(b"}")

    def empty_list(self) -> P:
        return self.raw(b"]")

    def setitem(self) -> P:
        return self.raw(b"s")

    def append(self) -> P:
        return self.raw(b"a")

    def pop(self) -> P:
        return self.raw(b"0")

    def dup(self) -> P:
        return self.raw(b"2")

    def put(self, index: int) -> P:
        return self.raw(b"q" + bytes([index]))

    def get(self, index: int) -> P:
        return self.raw(b"h" + bytes([index]))

    def memoize(self) -> P:
        return self.raw(b"\x94")

    # imports and calls
    def global_(self, module: str, name: str) -> P:
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self, module: str, name: str) -> P:
        return self.uni(module).uni(name).raw(b"\x93")

    def inst(self, module: str, name: str) -> P:
        return self.raw(b"i" + module.encode() + b"\n" + name.encode() + b"\n")

    def reduce(self) -> P:
        return self.raw(b"R")

    def build(self) -> P:
        return self.raw(b"b")

    def obj(self) -> P:
        return self.raw(b"o")

    def newobj(self) -> P:
        return self.raw(b"\x81")

    def stop(self) -> P:
        return self.raw(b".")

    def arg(self, value: Arg, proto: int) -> P:
        """Push one argument value."""
        if isinstance(value, Raw):
            return self.raw(value.data)
        if isinstance(value, str):
            return self.uni(value) if proto >= 1 else self.text_uni(value)
        if isinstance(value, bytes):
            return self.binbytes(value)
        if isinstance(value, bool) or value is None:
            return self.raw({True: b"\x88", False: b"\x89", None: b"N"}[value])
        if isinstance(value, int):
            return self.int_(value)
        if isinstance(value, list):
            self.empty_list().mark()
            for item in value:
                self.arg(item, proto)
            return self.raw(b"e")
        if isinstance(value, dict):
            self.empty_dict().mark()
            for key, item in value.items():
                self.arg(key, proto).arg(item, proto)
            return self.raw(b"u")
        self.mark()
        for item in value:
            self.arg(item, proto)
        return self.tuple()

    def import_(self, module: str, name: str, proto: int) -> P:
        return self.stack_global(module, name) if proto >= 4 else self.global_(module, name)

    def call(self, module: str, name: str, args: Sequence[Arg] = (), proto: int = 4) -> P:
        """Push ``module.name(*args)`` the way pickle writes a ``__reduce__`` result."""
        self.import_(module, name, proto)
        self.mark()
        for value in args:
            self.arg(value, proto)
        return self.tuple().reduce()


def call_pickle(module: str, name: str, args: Sequence[Arg] = (), proto: int = 4) -> bytes:
    """A whole pickle whose load returns ``module.name(*args)``."""
    return bytes(P(proto).call(module, name, args, proto).stop())


def nested_call(module: str, name: str, args: Sequence[Arg] = (), proto: int = 4) -> Raw:
    """``module.name(*args)`` as an argument of another call."""
    return Raw(bytes(P().call(module, name, args, proto)))


def touch(marker: Path) -> str:
    """The harmless shell payload of the samples: create ``marker``."""
    return f"touch {marker}"


def touch_code(marker: Path) -> str:
    """The harmless Python payload of the samples: create ``marker``."""
    return f"import pathlib; pathlib.Path({str(marker)!r}).touch()"


def load_in_subprocess(
    data: bytes, workdir: Path, *, loops: int = 1
) -> subprocess.CompletedProcess[str]:
    """Unpickle ``data`` with ``pickle.load`` in a throwaway interpreter (never in pytest).

    ``loops`` > 1 calls ``load`` repeatedly on the same file, as loaders of
    concatenated pickles do. Errors are expected for broken samples: their
    payload runs before the error.
    """
    path = workdir / "sample.pkl"
    path.write_bytes(data)
    code = (
        "import pickle, sys\n"
        "f = open(sys.argv[1], 'rb')\n"
        f"for _ in range({loops}):\n"
        "    pickle.load(f)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
