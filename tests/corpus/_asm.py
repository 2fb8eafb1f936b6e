"""A tiny pickle assembler: malicious samples are written opcode by opcode.

Hand assembly (rather than ``pickle.dumps`` of a crafted object) lets a sample
use exactly the opcode a technique is about (INST, OBJ, EXT1, STACK_GLOBAL with
a dotted name, a memo slot written twice...) and nothing the pickler would add.
Nothing here unpickles anything.
"""

from __future__ import annotations

import struct


class Asm:
    """Append opcodes fluently: ``Asm(2).global_("os", "system").str_("x").tuple1().reduce().stop()``."""

    def __init__(self, proto: int | None = 2) -> None:
        self.buf = bytearray()
        if proto is not None and proto >= 2:
            self.buf += b"\x80" + bytes([proto])

    def raw(self, data: bytes) -> Asm:
        self.buf += data
        return self

    def bytes(self) -> bytes:
        return bytes(self.buf)

    # -- imports -----------------------------------------------------------
    def global_(self, module: str, name: str) -> Asm:
        """GLOBAL (``c``): the text form every protocol understands."""
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self, module: str, name: str) -> Asm:
        """STACK_GLOBAL (protocol 4): module and name come from the stack."""
        return self.str_(module).str_(name).raw(b"\x93")

    def inst(self, module: str, name: str) -> Asm:
        """INST (``i``): call ``module.name(*args since MARK)`` (protocol 0)."""
        return self.raw(b"i" + module.encode() + b"\n" + name.encode() + b"\n")

    def ext1(self, code: int) -> Asm:
        """EXT1: the global registered as ``code`` in copyreg's extension registry."""
        return self.raw(b"\x82" + bytes([code]))

    # -- values ------------------------------------------------------------
    def str_(self, text: str) -> Asm:
        """BINUNICODE (protocol 1+)."""
        data = text.encode()
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def text_str(self, text: str) -> Asm:
        """STRING (``S``) with a quoted repr: the protocol 0 text form."""
        return self.raw(b"S" + repr(text).encode() + b"\n")

    def bin(self, data: bytes) -> Asm:
        """BINBYTES (protocol 3+)."""
        return self.raw(b"B" + struct.pack("<I", len(data)) + data)

    def int_(self, value: int) -> Asm:
        """BININT (signed 32-bit)."""
        return self.raw(b"J" + struct.pack("<i", value))

    def none(self) -> Asm:
        return self.raw(b"N")

    def false(self) -> Asm:
        return self.raw(b"\x89")

    def empty_dict(self) -> Asm:
        return self.raw(b"}")

    def empty_tuple(self) -> Asm:
        return self.raw(b")")

    def str_list(self, items: list[str]) -> Asm:
        """A list of strings: EMPTY_LIST MARK ... APPENDS."""
        self.raw(b"](")
        for item in items:
            self.str_(item)
        return self.raw(b"e")

    # -- structure ---------------------------------------------------------
    def mark(self) -> Asm:
        return self.raw(b"(")

    def tuple(self) -> Asm:
        return self.raw(b"t")

    def tuple1(self) -> Asm:
        return self.raw(b"\x85")

    def tuple2(self) -> Asm:
        return self.raw(b"\x86")

    def tuple3(self) -> Asm:
        return self.raw(b"\x87")

    def setitem(self) -> Asm:
        return self.raw(b"s")

    def pop(self) -> Asm:
        return self.raw(b"0")

    def dup(self) -> Asm:
        return self.raw(b"2")

    def put(self, index: int) -> Asm:
        """BINPUT: store the top of the stack in memo slot ``index``."""
        return self.raw(b"q" + bytes([index]))

    def get(self, index: int) -> Asm:
        """BINGET: push memo slot ``index``."""
        return self.raw(b"h" + bytes([index]))

    # -- calls -------------------------------------------------------------
    def reduce(self) -> Asm:
        return self.raw(b"R")

    def build(self) -> Asm:
        return self.raw(b"b")

    def obj(self) -> Asm:
        return self.raw(b"o")

    def newobj(self) -> Asm:
        return self.raw(b"\x81")

    def newobj_ex(self) -> Asm:
        return self.raw(b"\x92")

    def stop(self) -> Asm:
        return self.raw(b".")


def call(asm: Asm, module: str, name: str, *args: str) -> Asm:
    """Push ``module.name(*args)`` (string arguments) with GLOBAL + REDUCE."""
    asm.global_(module, name).mark()
    for arg in args:
        asm.str_(arg)
    return asm.tuple().reduce()


def os_system(command: str, *, proto: int | None = 2) -> bytes:
    """The classic: ``os.system(command)``; the unpickled value is its exit status."""
    return call(Asm(proto), "os", "system", command).stop().bytes()
