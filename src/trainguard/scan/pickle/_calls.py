"""Call sites of the pickle machine: REDUCE, NEWOBJ, INST, OBJ, BUILD, container ops.

This is where a symbolic call is judged: who is called (an imported global or
something computed at load time), with what (strings that read like code,
names handed to resolvers such as ``getattr``), and whether the callee
deserializes embedded bytes (``pickle.loads(b"...")``), which are then
extracted and scanned as nested content.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from trainguard.findings import Severity
from trainguard.scan.pickle import _rules as r
from trainguard.scan.pickle._opcodes import Blob, ByteArray
from trainguard.scan.pickle._policy import (
    BYTES_PRODUCERS,
    INVOKERS,
    NESTED_LOADERS,
    RESOLVERS,
    Tier,
    looks_like_code,
    name_danger,
)
from trainguard.scan.pickle._values import (
    Call,
    Global,
    Persistent,
    SDict,
    SSet,
    Unknown,
    children,
    literal_bytes,
    literal_str,
    render,
)

if TYPE_CHECKING:
    from trainguard.scan.pickle._machine import Machine

__all__ = ["ARRAY_WRAPPERS", "CallInspector"]

#: joblib writes raw array bytes right after BUILD of these wrappers.
ARRAY_WRAPPERS = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper"})

_LITERALS = (int, float, str, bytes, bool, type(None), Blob, ByteArray)
_TEXT_ENCODINGS = frozenset(
    {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "utf-8", "utf8", "ascii"}
)
_ARG_TYPES = (tuple, Call, Unknown, Persistent)


def iter_strings(value: Any, budget: int = 64, depth: int = 3) -> Iterator[str]:
    """Literal strings inside ``value`` (bounded walk)."""
    todo = [(value, 0)]
    while todo and budget > 0:
        item, level = todo.pop()
        budget -= 1
        text = literal_str(item)
        if text is not None:
            yield text
        elif level < depth and not isinstance(item, Call):
            todo.extend((child, level + 1) for child in children(item))


class CallInspector:
    """Judges the call sites of one :class:`Machine`."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine

    def call(self, func: Any, args: Any, kwargs: Any, op: str, pos: int) -> Call:
        """The value of ``func(*args, **kwargs)``, reporting what the call does."""
        m = self.m
        result = Call(func, args, op, pos, kwargs)
        if not isinstance(args, _ARG_TYPES):
            m.problem(
                r.INVALID_OPERATION, pos, f"{op} with arguments {render(args)}, not a tuple", op=op
            )
        if isinstance(func, Global):
            rec = m.globals[func.key]
            key = func.key
            safe = rec.verdict.tier is Tier.SAFE
            if not safe:
                rec.use(op, pos, render(result))
                if rec.verdict.tier is not Tier.KNOWN:
                    self._check_strings(key, args, kwargs, pos)
            invoked = INVOKERS.get(key)
            if invoked is not None:
                self._invoked(key, args, invoked, pos)
            loader = NESTED_LOADERS.get(key)
            if loader is not None:
                self._nested(key, loader, args, pos)
        elif isinstance(func, _LITERALS) or type(func) in (tuple, list, SDict, SSet):
            m.problem(
                r.INVALID_OPERATION, pos, f"{op} calls {render(func)}, which is not callable", op=op
            )
        else:
            m.problem(
                r.COMPUTED_CALL,
                pos,
                f"{op} calls {render(func)}, an object produced at load time",
                op=op,
                call=render(result),
            )
            self._check_strings(render(func, 60), args, kwargs, pos)
        return result

    def build(self, inst: Any, state: Any, pos: int) -> None:
        """BUILD: ``inst.__setstate__(state)`` or a ``__dict__`` update plus setattr."""
        m = self.m
        if isinstance(inst, Global):
            rec = m.globals[inst.key]
            rec.use("BUILD", pos)
            m.ctx.add(
                r.GLOBAL_MUTATION,
                f"BUILD at offset {pos} sets attributes on {inst.key} itself: {render(state)}",
                offset=pos,
                target=inst.key,
                state=render(state),
            )
            return
        if isinstance(inst, Call):
            inst.state = state
            func = inst.func
            if isinstance(func, Global):
                func_rec = m.globals.get(func.key)
                if func_rec is not None and func_rec.verdict.tier is not Tier.SAFE:
                    func_rec.use("BUILD", pos)
                if m.array_hook is not None and func.key in ARRAY_WRAPPERS:
                    m.array_hook(m, inst, pos)
        slots = state[1] if isinstance(state, tuple) and len(state) == 2 else None
        if isinstance(slots, SDict):
            names = [literal_str(k) for k, _ in slots.pairs]
            dunders = [n for n in names if n and n.startswith("__") and n.endswith("__")]
            if dunders:
                m.problem(
                    r.DUNDER_STATE,
                    pos,
                    f"BUILD sets {', '.join(dunders[:5])} on {render(inst, 60)} with setattr",
                    attributes=dunders[:20],
                )

    def container_op(self, target: Any, op: str, pos: int, items: tuple[Any, ...]) -> None:
        """APPEND/SETITEM/ADDITEMS on something that is not the matching builtin."""
        m = self.m
        if isinstance(target, Global):
            rec = m.globals[target.key]
            rec.use(op, pos)
            m.ctx.add(
                r.GLOBAL_MUTATION,
                f"{op} at offset {pos} changes {target.key} itself, adding {render(items)}",
                offset=pos,
                target=target.key,
            )
        elif isinstance(target, Call):
            func = target.func
            if isinstance(func, Global):
                func_rec = m.globals.get(func.key)
                if func_rec is not None and func_rec.verdict.tier is not Tier.SAFE:
                    func_rec.use(op, pos)
        elif type(target) is list and op.startswith("SETITEM"):
            pass  # list[index] = value is valid
        elif not isinstance(target, (Unknown, Persistent)):
            m.problem(r.INVALID_OPERATION, pos, f"{op} on {render(target, 60)}", op=op)

    # -- arguments -----------------------------------------------------------
    def _check_strings(self, callee: str, args: Any, kwargs: Any, pos: int) -> None:
        rec = self.m.globals.get(callee)
        resolver = callee in RESOLVERS
        for text in iter_strings((args, kwargs)):
            if resolver and rec is not None:
                danger = name_danger(text)
                if danger is not None:
                    rec.escalate(Severity.CRITICAL, f"its argument {text[:80]!r} {danger}")
            if looks_like_code(text):
                self.m.problem(
                    r.CODE_ARGUMENT,
                    pos,
                    f"{callee} is called with {text[:120]!r}",
                    callee=callee,
                    argument=text[:500],
                )
                return

    def _invoked(self, key: str, args: Any, index: int, pos: int) -> None:
        """A callable that calls one of its arguments: judge that argument too."""
        if not isinstance(args, tuple) or len(args) <= index:
            return
        target = args[index]
        if isinstance(target, Global):
            rec = self.m.globals.get(target.key)
            if rec is not None and rec.verdict.tier is not Tier.SAFE:
                rec.use(f"called by {key}", pos)
        elif not isinstance(target, _LITERALS):
            self.m.problem(
                r.COMPUTED_CALL,
                pos,
                f"{key} calls {render(target)}, an object produced at load time",
                op=key,
            )

    # -- nested payloads -----------------------------------------------------
    def _nested(self, key: str, loader: tuple[int, str | None], args: Any, pos: int) -> None:
        index, hint = loader
        target = args[index] if isinstance(args, tuple) and len(args) > index else None
        data = self.resolve_bytes(target, 0)
        if data is None:
            self.m.problem(
                r.NESTED_UNRESOLVED,
                pos,
                f"{key} loads {render(target)}, whose content is not in the file as a literal",
                loader=key,
            )
            return
        payload = data.tobytes() if isinstance(data, Blob) else data
        self.m.ctx.scan_nested(payload, f"nested@{pos}", hint=hint)

    def resolve_bytes(self, value: Any, depth: int) -> bytes | Blob | None:
        """The bytes ``value`` evaluates to when built from literals, else ``None``."""
        data = literal_bytes(value)
        if data is not None:
            return data
        if depth > 8 or not isinstance(value, Call) or not isinstance(value.func, Global):
            return None
        key = value.func.key
        args = value.args if isinstance(value.args, tuple) else ()
        if key not in BYTES_PRODUCERS or not args:
            return None
        first = args[0]
        text = literal_str(first)
        second = literal_str(args[1]) if len(args) > 1 else None
        try:
            if key in ("_codecs.encode", "codecs.encode"):
                encoding = (second or "utf-8").lower()
                if text is not None and encoding in _TEXT_ENCODINGS:
                    return text.encode(encoding)
                return None
            if key in ("io.BytesIO", "_io.BytesIO", "builtins.bytes", "builtins.bytearray"):
                if isinstance(first, list) and len(first) <= 1 << 20:
                    return bytes(first) if all(type(i) is int for i in first) else None
                return self.resolve_bytes(first, depth + 1)
            inner = self.resolve_bytes(first, depth + 1)
            if inner is not None:
                raw = inner.tobytes() if isinstance(inner, Blob) else inner
            elif text is not None:
                raw = text.encode("latin-1")
            else:
                return None
            return self._decode(key, raw, (second or "").lower())
        except (
            ValueError,  # binascii.Error included
            TypeError,
            zlib.error,
            lzma.LZMAError,
            OSError,
            EOFError,
        ):
            return None

    def _decode(self, key: str, raw: bytes, codec: str) -> bytes | None:
        import base64  # only payloads that decode bytes get here
        import binascii

        if key.endswith(("b64decode", "a2b_base64")) or codec == "base64":
            return base64.b64decode(raw, altchars=b"-_" if "urlsafe" in key else None)
        if key.endswith(("a2b_hex", "unhexlify")) or codec == "hex":
            return binascii.unhexlify(raw)
        cap = self.m.ctx.limits.member_bytes
        if key == "zlib.decompress" or codec == "zlib":
            out = zlib.decompressobj().decompress(raw, cap)
        elif key == "gzip.decompress":
            out = zlib.decompressobj(31).decompress(raw, cap)
        elif key == "bz2.decompress" or codec == "bz2":
            out = bz2.BZ2Decompressor().decompress(raw, cap)
        elif key == "lzma.decompress":
            out = lzma.LZMADecompressor().decompress(raw, cap)
        else:
            return None
        self.m.ctx.charge_decompressed(len(out))
        return out
