"""Symbolic values of the pickle machine.

Literals stay plain Python values (``int``, ``float``, ``str``, ``bytes``,
:class:`Blob` for big byte strings, ``None``, ``bool``); tuples are tuples and
lists are lists (``APPEND`` mutates them in place, as the real unpickler does,
so a list fetched from the memo later shows every item added since). What the
real unpickler would *compute* is represented, never computed: a
:class:`Global` is an import, a :class:`Call` is what a call site would return.

Values may share structure (``DUP``, memo), so every walk over them is bounded
by a node budget: a 200-byte pickle can describe an exponentially large tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from trainguard.scan.pickle._opcodes import Blob, ByteArray, OversizeInt, Str8

__all__ = [
    "Call",
    "Global",
    "Persistent",
    "SDict",
    "SSet",
    "Unknown",
    "children",
    "literal_bytes",
    "literal_str",
    "render",
]


class Global:
    """A ``module.name`` the unpickler would import (``find_class``)."""

    __slots__ = ("key", "module", "name", "offset")

    def __init__(self, module: str, name: str, offset: int) -> None:
        self.module = module
        self.name = name
        self.key = f"{module}.{name}"
        self.offset = offset

    def __repr__(self) -> str:
        return self.key


class Call:
    """The result of calling ``func`` (REDUCE, NEWOBJ, INST, OBJ...).

    ``state`` is what a later ``BUILD`` passed to the object, if any.
    """

    __slots__ = ("args", "func", "kwargs", "offset", "op", "state")

    def __init__(self, func: Any, args: Any, op: str, offset: int, kwargs: Any = None) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.op = op
        self.offset = offset
        self.state: Any = None


class Persistent:
    """An object the loader's ``persistent_load`` supplies (torch storages)."""

    __slots__ = ("offset", "pid")

    def __init__(self, pid: Any, offset: int) -> None:
        self.pid = pid
        self.offset = offset


class Unknown:
    """A value the scanner cannot know statically (out-of-band data, errors)."""

    __slots__ = ("offset", "why")

    def __init__(self, why: str, offset: int) -> None:
        self.why = why
        self.offset = offset


class SDict:
    """A dict as a list of pairs: keys may be unhashable symbolic values."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[Any, Any]] | None = None) -> None:
        self.pairs: list[tuple[Any, Any]] = pairs if pairs is not None else []

    def get(self, key: str) -> Any:
        """The last value stored under the literal ``key`` (``None`` if absent)."""
        found = None
        for k, v in self.pairs:
            if k == key and isinstance(k, str):
                found = v
        return found


class SSet:
    """A set or frozenset."""

    __slots__ = ("frozen", "items")

    def __init__(self, items: list[Any] | None = None, frozen: bool = False) -> None:
        self.items: list[Any] = items if items is not None else []
        self.frozen = frozen


def literal_str(value: Any) -> str | None:
    """``value`` as the text a default unpickler would see, or ``None`` if not a string."""
    if isinstance(value, str):
        return value
    if isinstance(value, Str8):
        return value.text()
    return None


def literal_bytes(value: Any) -> bytes | Blob | None:
    """``value`` as a byte-string literal (copied, or a :class:`Blob`), or ``None``."""
    if isinstance(value, (bytes, Blob)):
        return value
    if isinstance(value, (Str8, ByteArray)):
        return value.data
    return None


def children(value: Any) -> Iterator[Any]:
    """The values directly inside ``value`` (for bounded walks)."""
    if isinstance(value, (tuple, list)):
        yield from value
    elif isinstance(value, SDict):
        for k, v in value.pairs:
            yield k
            yield v
    elif isinstance(value, SSet):
        yield from value.items
    elif isinstance(value, Call):
        yield value.func
        yield value.args
        if value.kwargs is not None:
            yield value.kwargs
        if value.state is not None:
            yield value.state
    elif isinstance(value, Persistent):
        yield value.pid


def render(value: Any, limit: int = 160) -> str:
    """A short, Python-like rendering of ``value`` for evidence (bounded)."""
    out: list[str] = []
    budget = [limit]
    _render(value, out, budget, 0)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _emit(out: list[str], budget: list[int], text: str) -> bool:
    out.append(text)
    budget[0] -= len(text)
    return budget[0] > 0


def _render(value: Any, out: list[str], budget: list[int], depth: int) -> None:
    if budget[0] <= 0:
        return
    if depth > 6:
        _emit(out, budget, "...")
        return
    if isinstance(value, Global):
        _emit(out, budget, value.key)
    elif isinstance(value, Call):
        _render(value.func, out, budget, depth + 1)
        args = value.args
        if isinstance(args, tuple):
            _emit(out, budget, "(")
            for i, item in enumerate(args):
                if i:
                    _emit(out, budget, ", ")
                _render(item, out, budget, depth + 1)
                if budget[0] <= 0:
                    return
            _emit(out, budget, ")")
        else:
            _emit(out, budget, "(*")
            _render(args, out, budget, depth + 1)
            _emit(out, budget, ")")
    elif isinstance(value, (tuple, list)):
        open_, close = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        _emit(out, budget, open_)
        for i, item in enumerate(value):
            if i:
                _emit(out, budget, ", ")
            _render(item, out, budget, depth + 1)
            if budget[0] <= 0:
                return
        _emit(out, budget, close)
    elif isinstance(value, SDict):
        _emit(out, budget, "{")
        for i, (k, v) in enumerate(value.pairs):
            if i:
                _emit(out, budget, ", ")
            _render(k, out, budget, depth + 1)
            _emit(out, budget, ": ")
            _render(v, out, budget, depth + 1)
            if budget[0] <= 0:
                return
        _emit(out, budget, "}")
    elif isinstance(value, SSet):
        _emit(out, budget, "frozenset({" if value.frozen else "{")
        for i, item in enumerate(value.items):
            if i:
                _emit(out, budget, ", ")
            _render(item, out, budget, depth + 1)
            if budget[0] <= 0:
                return
        _emit(out, budget, "})" if value.frozen else "}")
    elif isinstance(value, Persistent):
        _emit(out, budget, "persistent_load(")
        _render(value.pid, out, budget, depth + 1)
        _emit(out, budget, ")")
    elif isinstance(value, Unknown):
        _emit(out, budget, f"<{value.why}>")
    elif isinstance(value, (Blob, ByteArray)) or (isinstance(value, bytes) and len(value) > 48):
        data = value.data if isinstance(value, ByteArray) else value
        _emit(out, budget, f"<{len(data)} bytes>")
    elif isinstance(value, Str8):
        data = value.data
        _emit(
            out,
            budget,
            f"<{len(data)} bytes>" if isinstance(data, Blob) else repr(data[:48].decode("latin-1")),
        )
    elif isinstance(value, OversizeInt):
        _emit(out, budget, repr(value))
    elif isinstance(value, str):
        _emit(out, budget, repr(value[:120]))
    else:
        _emit(out, budget, repr(value))
