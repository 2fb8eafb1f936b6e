"""Cheap "is this a pickle?" check over a bounded prefix.

Protocol 2+ pickles start with ``PROTO``; protocol 0/1 pickles have no magic
at all, so the probe parses the first opcodes strictly and simulates their
stack effect (items, marks and memo slots). Text and random binary fail within
a few bytes: a non-opcode byte, an unquoted ``STRING``, a pop from an empty
stack, a ``GET`` of a memo slot never written. A malicious protocol-0 pickle
such as ``cos\\nsystem\\n(S'echo'\\ntR.`` passes.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from trainguard.scan.pickle._allowlist import KNOWN_EXACT, SAFE_GLOBALS
from trainguard.scan.pickle._denylist import DANGEROUS
from trainguard.scan.pickle._opcodes import OPCODES, OpReader, PickleParseError

__all__ = ["Probe", "looks_like_pickle", "probe"]


def _codes(names: str) -> frozenset[int]:
    by_name = {info.name: code for code, info in OPCODES.items()}
    return frozenset(by_name[n] for n in names.split())


_MARK = _codes("MARK")
_POP = _codes("POP")
_STOP = _codes("STOP")
_PUTS = _codes("PUT BINPUT LONG_BINPUT")
_MEMOIZE = _codes("MEMOIZE")
_GETS = _codes("GET BINGET LONG_BINGET")
# Opcodes that pop a MARK first, then need/produce on the frame below it.
_MARK_PUSH1 = _codes("TUPLE LIST DICT FROZENSET INST OBJ")
_MARK_NEED1 = _codes("APPENDS SETITEMS ADDITEMS")
_MARK_ONLY = _codes("POP_MARK")
# OBJ takes its class from the items above the MARK: with none, it fails unimported.
_MARK_CLASS = _codes("OBJ")
# (items needed, net change) for the other opcodes.
_EFFECT: dict[int, tuple[int, int]] = {}
for _name, _effect in (
    ("TUPLE1 BINPERSID READONLY_BUFFER", (1, 0)),
    ("TUPLE2 REDUCE NEWOBJ STACK_GLOBAL BUILD APPEND", (2, -1)),
    ("TUPLE3 NEWOBJ_EX SETITEM", (3, -2)),
    ("DUP", (1, 1)),
    ("PUT BINPUT LONG_BINPUT MEMOIZE", (1, 0)),
    ("PROTO FRAME", (0, 0)),
):
    for _code in _codes(_name):
        _EFFECT[_code] = _effect
_CALLISH = _codes("GLOBAL STACK_GLOBAL INST REDUCE OBJ NEWOBJ NEWOBJ_EX BUILD EXT1 EXT2 EXT4")
_NAMED = _codes("GLOBAL INST")
#: Top-level modules a real pickle imports: a stream that imports one of them
#: is a pickle even if it breaks right after (the import already happened).
_KNOWN_ROOTS = frozenset(
    set(getattr(sys, "stdlib_module_names", ()))
    | {key.split(".", 1)[0] for key in DANGEROUS}
    | {key.split(".", 1)[0] for key in SAFE_GLOBALS | KNOWN_EXACT}
    | {"__builtin__", "copy_reg", "__main__"}
)


def _known_import(arg: tuple[str, str]) -> bool:
    module, name = arg
    parts = module.split(".") + name.split(".")
    return parts[0] in _KNOWN_ROOTS and all(p.isidentifier() for p in parts)


class Probe(NamedTuple):
    """What the first opcodes of a buffer look like."""

    ops: int
    error: str | None
    reached_stop: bool
    imports: bool
    proto_first: bool
    known_import: bool = False


def probe(
    data: memoryview | bytes, start: int = 0, *, max_bytes: int = 65536, max_ops: int = 512
) -> Probe:
    """Parse and stack-simulate at most ``max_ops`` opcodes from ``start``."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    end = min(len(view), start + max_bytes)
    reader = OpReader(view, start, end)
    depth = 0
    marks: list[int] = []
    memo: set[int] = set()
    ops = 0
    imports = False
    known = False
    proto_first = start < len(view) and view[start] == 0x80
    try:
        for _pos, code, arg in reader:
            ops += 1
            if code in _NAMED and not known:
                known = _known_import(arg)
            if code in _MARK:
                marks.append(depth)
                depth = 0
            elif code in _POP:
                if depth:
                    depth -= 1
                elif marks:
                    depth = marks.pop()
                else:
                    return Probe(ops, "stack", False, imports, proto_first, known)
            elif code in _MARK_PUSH1 or code in _MARK_NEED1 or code in _MARK_ONLY:
                if not marks or (code in _MARK_CLASS and depth < 1):
                    return Probe(ops, "stack", False, imports, proto_first, known)
                depth = marks.pop()
                if code in _MARK_PUSH1:
                    depth += 1
                elif code in _MARK_NEED1 and depth < 1:
                    return Probe(ops, "stack", False, imports, proto_first, known)
            elif code in _STOP:
                ok = depth >= 1
                return Probe(ops, None if ok else "stack", ok, imports, proto_first, known)
            elif code in _EFFECT:
                need, net = _EFFECT[code]
                if depth < need:
                    return Probe(ops, "stack", False, imports, proto_first, known)
                depth += net
                if code in _PUTS:
                    memo.add(arg)
                elif code in _MEMOIZE:
                    memo.add(len(memo))
            elif code in _GETS and arg not in memo:
                return Probe(ops, "memo", False, imports, proto_first, known)
            else:
                depth += 1
            imports = imports or code in _CALLISH
            if ops >= max_ops:
                break
    except PickleParseError as exc:
        if exc.kind == "truncated" and end < len(view):
            return Probe(ops, None, False, imports, proto_first, known)  # only the prefix ended
        return Probe(ops, exc.kind, False, imports, proto_first, known)
    return Probe(ops, None, False, imports, proto_first, known)


def looks_like_pickle(data: memoryview | bytes, start: int = 0) -> bool:
    """Whether the bytes at ``start`` plausibly begin a pickle (bounded cost).

    A stream that breaks after importing something is still a pickle (a broken
    malicious one), and so is one whose GLOBAL names a real module (``os``,
    ``torch``...); one that breaks before doing anything is not.
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    if start >= len(view):
        return False
    if view[start] == 0x80 and start + 1 < len(view) and view[start + 1] <= 5:
        return True  # PROTO with a protocol the unpickler accepts: no need to probe
    result = probe(view, start)
    if view[start] == 0x80:
        return result.error not in ("unknown-opcode", "malformed") and result.ops >= 3
    if result.reached_stop:
        return result.ops >= 2
    if result.error is None:
        return result.ops >= 8 or (result.ops >= 3 and result.imports)
    return (result.imports and result.ops >= 4) or result.known_import
