"""The symbolic pickle machine: pickle.py's stack, marks and memo, without objects.

Every opcode is interpreted with the semantics of CPython's unpickler (marks
fence the stack, ``POP`` on an empty frame pops the mark, ``MEMOIZE`` stores
at ``len(memo)``, later ``PUT`` overwrite earlier ones). Imports become
:class:`Global` values judged by :mod:`._policy`; calls become :class:`Call`
values; nothing is imported or called. Where the real unpickler would raise,
the machine reports the error and goes on with an :class:`Unknown` value, so
opcodes after a crafted error are still examined.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity
from trainguard.scan.pickle import _rules as r
from trainguard.scan.pickle._calls import CallInspector
from trainguard.scan.pickle._handlers import PROBLEMS_LISTED, GlobalRecord, Handlers
from trainguard.scan.pickle._opcodes import (
    OPCODES,
    STOP,
    PickleParseError,
    as_bytes_view,
    decode_op,
)
from trainguard.scan.pickle._policy import Tier
from trainguard.scan.pickle._values import Call

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

__all__ = ["GlobalRecord", "Machine"]

_PARSE_RULES = {
    "truncated": r.TRUNCATED,
    "unknown-opcode": r.UNKNOWN_OPCODE,
    "malformed": r.MALFORMED_OPCODE,
}
#: Opcodes between two checks of the time budget and the stack limit, minus one.
_CHECK_MASK = 4095


def _codes(names: str) -> list[int]:
    by_name = {info.name: code for code, info in OPCODES.items()}
    return [by_name[n] for n in names.split()]


# Inline categories of the run loop (0: decode, then the handler method).
(
    _C_PUSH,
    _C_BINPUT,
    _C_LONG_BINPUT,
    _C_BINGET,
    _C_LONG_BINGET,
    _C_BININT1,
    _C_BININT2,
    _C_BININT,
    _C_CONST,
    _C_MARK,
    _C_TUPLE,
    _C_TUPLE1,
    _C_TUPLE2,
    _C_MEMOIZE,
) = range(1, 15)
_CATEGORY = [0] * 256
for _cat, _names in (
    (
        _C_PUSH,
        "INT LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING SHORT_BINBYTES "
        "BINBYTES BINBYTES8 UNICODE SHORT_BINUNICODE BINUNICODE BINUNICODE8",
    ),
    (_C_BINPUT, "BINPUT"),
    (_C_LONG_BINPUT, "LONG_BINPUT"),
    (_C_BINGET, "BINGET"),
    (_C_LONG_BINGET, "LONG_BINGET"),
    (_C_BININT1, "BININT1"),
    (_C_BININT2, "BININT2"),
    (_C_BININT, "BININT"),
    (_C_CONST, "NONE NEWTRUE NEWFALSE EMPTY_TUPLE"),
    (_C_MARK, "MARK"),
    (_C_TUPLE, "TUPLE"),
    (_C_TUPLE1, "TUPLE1"),
    (_C_TUPLE2, "TUPLE2"),
    (_C_MEMOIZE, "MEMOIZE"),
):
    for _code in _codes(_names):
        _CATEGORY[_code] = _cat
_CONSTS: dict[int, Any] = dict(
    zip(_codes("NONE NEWTRUE NEWFALSE EMPTY_TUPLE"), (None, True, False, ()), strict=True)
)
#: (opcode, handler method name); opcodes without a handler push their argument.
_HANDLER_NAMES = tuple((code, "_op_" + info.name.lower()) for code, info in OPCODES.items())

_U2 = struct.Struct("<H").unpack_from
_I4 = struct.Struct("<i").unpack_from
_U4 = struct.Struct("<I").unpack_from

ArrayHook = Callable[["Machine", Call, int], None]


class Machine(Handlers):
    """Interpret one pickle stream of ``data`` starting at ``start``."""

    def __init__(
        self,
        data: memoryview,
        ctx: ScanContext,
        start: int = 0,
        *,
        array_hook: ArrayHook | None = None,
    ) -> None:
        self.data = as_bytes_view(data)
        self.ctx = ctx
        self.start = start
        self.array_hook = array_hook
        #: Where the next opcode is read (a hook may move it past raw data).
        self.pos = start
        self.limit = len(self.data)
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.protocol: int | None = None
        self.globals: dict[str, GlobalRecord] = {}
        self.persistent: list[Any] = []
        self.result: Any = None
        self.complete = False
        self.end = start
        self.opcodes = 0
        #: Nested streams read in place (joblib object arrays).
        self.substreams: list[Machine] = []
        self._saved = 0  # items held in the frames under the marks
        self._problems: dict[str, int] = {}
        self._problem_rules: dict[str, Rule] = {}
        self.calls = CallInspector(self)
        self._handlers: list[Callable[[int, Any], None]] = [self._op_unknown] * 256
        push = self._push_arg
        for code, name in _HANDLER_NAMES:
            self._handlers[code] = getattr(self, name, push)

    # -- driver ------------------------------------------------------------
    def run(self) -> None:
        """Interpret until STOP or a parse error; findings go to the context.

        The hottest opcodes (memo, small ints, MARK, tuples: nine in ten
        opcodes of a torch checkpoint) are decoded and applied inline; every
        other opcode, and every error case of the inline ones, goes through
        :func:`decode_op` and its handler method.
        """
        data, limit = self.data, self.limit
        handlers, cats, consts = self._handlers, _CATEGORY, _CONSTS
        memo, metastack, stack = self.memo, self.metastack, self.stack
        u2, i4, u4 = _U2, _I4, _U4
        pos = self.pos
        count = 0
        try:
            while True:
                count += 1
                if not count & _CHECK_MASK:
                    self._check_limits(count)
                if pos >= limit:
                    raise PickleParseError("truncated", pos, "pickle ends before STOP")
                code = data[pos]
                cat = cats[code]
                if cat == _C_BINPUT and stack and pos + 1 < limit:
                    memo[data[pos + 1]] = stack[-1]
                    pos += 2
                elif cat == _C_LONG_BINPUT and stack and pos + 4 < limit:
                    memo[u4(data, pos + 1)[0]] = stack[-1]
                    pos += 5
                elif cat == _C_BINGET and pos + 1 < limit and data[pos + 1] in memo:
                    stack.append(memo[data[pos + 1]])
                    pos += 2
                elif cat == _C_BININT1 and pos + 1 < limit:
                    stack.append(data[pos + 1])
                    pos += 2
                elif cat == _C_MARK:
                    metastack.append(stack)
                    self._saved += len(stack)
                    stack = self.stack = []
                    pos += 1
                elif cat == _C_TUPLE and metastack:
                    items = tuple(stack)
                    stack = self.stack = metastack.pop()
                    self._saved -= len(stack)
                    stack.append(items)
                    pos += 1
                elif cat == _C_CONST:
                    stack.append(consts[code])
                    pos += 1
                elif cat == _C_LONG_BINGET and pos + 4 < limit and u4(data, pos + 1)[0] in memo:
                    stack.append(memo[u4(data, pos + 1)[0]])
                    pos += 5
                elif cat == _C_TUPLE1 and stack:
                    stack[-1] = (stack[-1],)
                    pos += 1
                elif cat == _C_TUPLE2 and len(stack) > 1:
                    last = stack.pop()
                    stack[-1] = (stack[-1], last)
                    pos += 1
                elif cat == _C_MEMOIZE and stack:
                    memo[len(memo)] = stack[-1]
                    pos += 1
                elif cat == _C_BININT2 and pos + 2 < limit:
                    stack.append(u2(data, pos + 1)[0])
                    pos += 3
                elif cat == _C_BININT and pos + 4 < limit:
                    stack.append(i4(data, pos + 1)[0])
                    pos += 5
                else:
                    code, arg, nxt = decode_op(data, pos, limit)
                    if cat == _C_PUSH:
                        stack.append(arg)
                        pos = nxt
                        continue
                    self.pos = nxt
                    handlers[code](pos, arg)
                    stack = self.stack
                    pos = self.pos
                    if code == STOP:
                        break
            self.complete = True
            self.end = pos
        except PickleParseError as exc:
            self.end = exc.offset
            self.ctx.add(
                _PARSE_RULES[exc.kind],
                f"{exc.message} at offset {exc.offset} (after {count - 1} opcodes, which run "
                "when the file is loaded)",
                offset=exc.offset,
                opcodes_before=count - 1,
            )
        finally:
            self.opcodes = count
            self.flush()
            self._teardown()

    def _teardown(self) -> None:
        """Drop what ties values to the machine (reference cycles outlive scans)."""
        self._handlers = []
        del self.calls
        self.stack = []
        self.metastack.clear()
        self.memo.clear()

    def _check_limits(self, count: int) -> None:
        self.ctx.check_time()
        limits = self.ctx.limits
        if count > limits.pickle_opcodes:
            raise LimitExceeded(
                "pickle_opcodes", count, limits.pickle_opcodes, subject=self.ctx.subject
            )
        depth = self._saved + len(self.stack) + len(self.metastack)
        if depth > limits.pickle_stack:
            raise LimitExceeded(
                "pickle_stack", depth, limits.pickle_stack, subject=self.ctx.subject
            )
        if len(self.memo) > limits.pickle_memo:
            raise LimitExceeded(
                "pickle_memo", len(self.memo), limits.pickle_memo, subject=self.ctx.subject
            )

    def flush(self) -> None:
        """Report one finding per non-safe global, plus the problem overflow counts."""
        for rec in self.globals.values():
            self._report_global(rec)
        for rule_id, count in self._problems.items():
            if count > PROBLEMS_LISTED:
                rule = self._problem_rules[rule_id]
                self.ctx.add(
                    rule,
                    f"{count - PROBLEMS_LISTED} more {rule_id} problems in this stream, not listed",
                    count=count - PROBLEMS_LISTED,
                )
        self._problems.clear()

    def _report_global(self, rec: GlobalRecord) -> None:
        verdict = rec.verdict
        if verdict.tier is Tier.SAFE and rec.escalation is None:
            return
        severity = verdict.severity or Severity.LOW
        reason = verdict.reason
        if rec.escalation is not None and rec.escalation[0] >= severity:
            severity, reason = rec.escalation[0], f"{reason}; {rec.escalation[1]}"
        if verdict.dotted:
            rule = r.DOTTED_GLOBAL
        elif verdict.tier is Tier.DANGEROUS or rec.escalation is not None:
            rule = r.DANGEROUS_GLOBAL
        elif verdict.tier is Tier.KNOWN:
            rule = r.NON_WEIGHTS_GLOBAL
        else:
            rule = r.UNKNOWN_GLOBAL
        if rec.uses:
            first = rec.uses[0]
            how = f"used by {first['op']} at offset {first['offset']}"
            if "call" in first:
                how += f": {first['call']}"
        else:
            how = "imported, not called"
        self.ctx.add(
            rule,
            f"{rec.key}: {reason} ({how})",
            severity=severity,
            module=rec.module,
            name=rec.name,
            offset=rec.offset,
            count=rec.count,
            tier=verdict.tier.value,
            uses=list(rec.uses),
        )
