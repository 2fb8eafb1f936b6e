"""Opcode handlers of the pickle machine, with pickle.py's exact stack semantics.

Each ``_op_<name>`` method applies one opcode to the symbolic stack, marks and
memo. Where the real unpickler raises (stack underflow, missing MARK, unset
memo slot, non-string STACK_GLOBAL operands) the handler reports the problem
and goes on with an :class:`Unknown`, so later opcodes are still examined.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainguard.findings import Rule, Severity
from trainguard.scan.pickle import _rules as r
from trainguard.scan.pickle._opcodes import PickleParseError
from trainguard.scan.pickle._policy import Verdict, classify, fix_import
from trainguard.scan.pickle._values import (
    Global,
    Persistent,
    SDict,
    SSet,
    Unknown,
    literal_str,
    render,
)

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext
    from trainguard.scan.pickle._calls import CallInspector

__all__ = ["GlobalRecord", "Handlers"]

#: Problems of one kind listed per stream; more are counted in one last finding.
PROBLEMS_LISTED = 10
#: Call sites kept as evidence per global.
_USES_LISTED = 8
_LITERALS = (int, float, str, bytes, bool, type(None))


class GlobalRecord:
    """Everything one stream did with one global: where, how often, how."""

    __slots__ = ("count", "escalation", "key", "module", "name", "offset", "uses", "verdict")

    def __init__(self, module: str, name: str, verdict: Verdict, offset: int) -> None:
        self.module = module
        self.name = name
        self.key = f"{module}.{name}"
        self.verdict = verdict
        self.offset = offset
        self.count = 0
        self.uses: list[dict[str, Any]] = []
        self.escalation: tuple[Severity, str] | None = None

    def use(self, op: str, offset: int, call: str | None = None) -> None:
        if len(self.uses) < _USES_LISTED:
            entry: dict[str, Any] = {"op": op, "offset": offset}
            if call is not None:
                entry["call"] = call
            self.uses.append(entry)

    def escalate(self, severity: Severity, reason: str) -> None:
        if self.escalation is None or severity > self.escalation[0]:
            self.escalation = (severity, reason)


class Handlers:
    """The stack, marks and memo of one stream, and the opcodes acting on them."""

    ctx: ScanContext
    calls: CallInspector
    stack: list[Any]
    metastack: list[list[Any]]
    memo: dict[int, Any]
    proto: int
    protocol: int | None
    globals: dict[str, GlobalRecord]
    persistent: list[Any]
    result: Any
    pos: int
    limit: int
    _saved: int
    _problems: dict[str, int]
    _problem_rules: dict[str, Rule]

    # -- helpers -------------------------------------------------------------
    def problem(self, rule: Rule, pos: int, message: str, **evidence: Any) -> None:
        """Report a structural problem (capped per rule and stream)."""
        count = self._problems.get(rule.id, 0) + 1
        self._problems[rule.id] = count
        self._problem_rules[rule.id] = rule
        if count <= PROBLEMS_LISTED:
            self.ctx.add(rule, f"{message} at offset {pos}", offset=pos, **evidence)

    def record(self, value: Any) -> GlobalRecord | None:
        """The record of ``value`` if it is an imported global."""
        if isinstance(value, Global):
            return self.globals.get(value.key)
        return None

    def _pop(self, pos: int, op: str) -> Any:
        stack = self.stack
        if stack:
            return stack.pop()
        self.problem(r.STACK_ERROR, pos, f"{op} pops an empty stack (or across a MARK)", op=op)
        return Unknown("stack underflow", pos)

    def _top(self, pos: int, op: str) -> Any:
        stack = self.stack
        if stack:
            return stack[-1]
        self.problem(r.STACK_ERROR, pos, f"{op} needs a value on an empty stack", op=op)
        return Unknown("stack underflow", pos)

    def _pop_mark(self, pos: int, op: str) -> list[Any]:
        items = self.stack
        if not self.metastack:
            self.problem(r.STACK_ERROR, pos, f"{op} finds no MARK", op=op)
            self.stack = []
            return items
        self.stack = self.metastack.pop()
        self._saved -= len(self.stack)
        return items

    def make_global(self, module: str, name: str, pos: int) -> Global:
        """Import ``module.name`` the way find_class would (with Python 2 fixes)."""
        module, name = fix_import(module, name, self.proto)
        glob = Global(module, name, pos)
        rec = self.globals.get(glob.key)
        if rec is None:
            rec = GlobalRecord(module, name, classify(module, name), pos)
            self.globals[glob.key] = rec
        rec.count += 1
        return glob

    # -- opcodes: structure --------------------------------------------------
    def _op_unknown(self, pos: int, arg: Any) -> None:  # pragma: no cover - reader raises first
        raise PickleParseError("unknown-opcode", pos, "unknown opcode")

    def _push_arg(self, pos: int, arg: Any) -> None:
        self.stack.append(arg)

    def _op_mark(self, pos: int, arg: Any) -> None:
        self.metastack.append(self.stack)
        self._saved += len(self.stack)
        self.stack = []

    def _op_stop(self, pos: int, arg: Any) -> None:
        self.result = self._pop(pos, "STOP")
        if self.stack or self.metastack:
            self.ctx.add(
                r.LEFTOVER_STACK,
                f"STOP at offset {pos} leaves {len(self.stack)} values and "
                f"{len(self.metastack)} open marks behind",
                offset=pos,
            )

    def _op_pop(self, pos: int, arg: Any) -> None:
        if self.stack:
            self.stack.pop()
        elif self.metastack:
            self._pop_mark(pos, "POP")
        else:
            self.problem(r.STACK_ERROR, pos, "POP on an empty stack", op="POP")

    def _op_pop_mark(self, pos: int, arg: Any) -> None:
        self._pop_mark(pos, "POP_MARK")

    def _op_dup(self, pos: int, arg: Any) -> None:
        self.stack.append(self._top(pos, "DUP"))

    def _op_proto(self, pos: int, arg: Any) -> None:
        self.proto = arg
        if self.protocol is None:
            self.protocol = arg
        if arg > 5:
            self.problem(r.UNSUPPORTED_PROTOCOL, pos, f"PROTO {arg}", protocol=arg)

    def _op_frame(self, pos: int, arg: Any) -> None:
        if self.pos + arg > self.limit:
            self.problem(r.TRUNCATED, pos, f"FRAME of {arg} bytes runs past the end of the data")

    # -- opcodes: literals ---------------------------------------------------
    def _op_none(self, pos: int, arg: Any) -> None:
        self.stack.append(None)

    def _op_newtrue(self, pos: int, arg: Any) -> None:
        self.stack.append(True)

    def _op_newfalse(self, pos: int, arg: Any) -> None:
        self.stack.append(False)

    def _op_empty_list(self, pos: int, arg: Any) -> None:
        self.stack.append([])

    def _op_empty_tuple(self, pos: int, arg: Any) -> None:
        self.stack.append(())

    def _op_empty_dict(self, pos: int, arg: Any) -> None:
        self.stack.append(SDict())

    def _op_empty_set(self, pos: int, arg: Any) -> None:
        self.stack.append(SSet())

    def _op_next_buffer(self, pos: int, arg: Any) -> None:
        self.problem(r.OUT_OF_BAND, pos, "NEXT_BUFFER takes data from outside the file")
        self.stack.append(Unknown("out-of-band buffer", pos))

    def _op_readonly_buffer(self, pos: int, arg: Any) -> None:
        self._top(pos, "READONLY_BUFFER")

    def _op_persid(self, pos: int, arg: Any) -> None:
        self.persistent.append(arg)
        self.stack.append(Persistent(arg, pos))

    def _op_binpersid(self, pos: int, arg: Any) -> None:
        pid = self._pop(pos, "BINPERSID")
        self.persistent.append(pid)
        self.stack.append(Persistent(pid, pos))

    # -- opcodes: containers -------------------------------------------------
    def _op_list(self, pos: int, arg: Any) -> None:
        items = self._pop_mark(pos, "LIST")
        self.stack.append(items)

    def _op_tuple(self, pos: int, arg: Any) -> None:
        items = tuple(self._pop_mark(pos, "TUPLE"))
        self.stack.append(items)

    def _op_tuple1(self, pos: int, arg: Any) -> None:
        self.stack.append((self._pop(pos, "TUPLE1"),))

    def _op_tuple2(self, pos: int, arg: Any) -> None:
        b = self._pop(pos, "TUPLE2")
        self.stack.append((self._pop(pos, "TUPLE2"), b))

    def _op_tuple3(self, pos: int, arg: Any) -> None:
        c = self._pop(pos, "TUPLE3")
        b = self._pop(pos, "TUPLE3")
        self.stack.append((self._pop(pos, "TUPLE3"), b, c))

    def _op_dict(self, pos: int, arg: Any) -> None:
        items = self._pop_mark(pos, "DICT")
        if len(items) % 2:
            self.problem(r.INVALID_OPERATION, pos, "DICT with an odd number of items", op="DICT")
        self.stack.append(SDict(list(zip(items[0::2], items[1::2], strict=False))))

    def _op_frozenset(self, pos: int, arg: Any) -> None:
        items = self._pop_mark(pos, "FROZENSET")
        self.stack.append(SSet(items, frozen=True))

    def _op_append(self, pos: int, arg: Any) -> None:
        value = self._pop(pos, "APPEND")
        target = self._top(pos, "APPEND")
        if type(target) is list:
            target.append(value)
        else:
            self.calls.container_op(target, "APPEND", pos, (value,))

    def _op_appends(self, pos: int, arg: Any) -> None:
        items = self._pop_mark(pos, "APPENDS")
        target = self._top(pos, "APPENDS")
        if type(target) is list:
            target.extend(items)
        else:
            self.calls.container_op(target, "APPENDS", pos, tuple(items))

    def _op_setitem(self, pos: int, arg: Any) -> None:
        value = self._pop(pos, "SETITEM")
        key = self._pop(pos, "SETITEM")
        target = self._top(pos, "SETITEM")
        if type(target) is SDict:
            target.pairs.append((key, value))
        else:
            self.calls.container_op(target, "SETITEM", pos, (key, value))

    def _op_setitems(self, pos: int, arg: Any) -> None:
        items = self._pop_mark(pos, "SETITEMS")
        target = self._top(pos, "SETITEMS")
        if len(items) % 2:
            self.problem(
                r.INVALID_OPERATION, pos, "SETITEMS with an odd number of items", op="SETITEMS"
            )
        if type(target) is SDict:
            target.pairs.extend(zip(items[0::2], items[1::2], strict=False))
        else:
            self.calls.container_op(target, "SETITEMS", pos, tuple(items))

    def _op_additems(self, pos: int, arg: Any) -> None:
        items = self._pop_mark(pos, "ADDITEMS")
        target = self._top(pos, "ADDITEMS")
        if type(target) is SSet and not target.frozen:
            target.items.extend(items)
        else:
            self.calls.container_op(target, "ADDITEMS", pos, tuple(items))

    # -- opcodes: memo -------------------------------------------------------
    def _put(self, pos: int, index: int, op: str) -> None:
        if index < 0:
            self.problem(r.MEMO_ERROR, pos, f"{op} with negative index {index}", op=op, index=index)
            return
        self.memo[index] = self._top(pos, op)

    def _op_put(self, pos: int, arg: Any) -> None:
        self._put(pos, arg, "PUT")

    def _op_binput(self, pos: int, arg: Any) -> None:
        stack = self.stack
        if stack:
            self.memo[arg] = stack[-1]
        else:
            self._put(pos, arg, "BINPUT")

    def _op_long_binput(self, pos: int, arg: Any) -> None:
        self._put(pos, arg, "LONG_BINPUT")

    def _op_memoize(self, pos: int, arg: Any) -> None:
        self._put(pos, len(self.memo), "MEMOIZE")

    def _get(self, pos: int, index: int, op: str) -> None:
        memo = self.memo
        if index in memo:
            self.stack.append(memo[index])
            return
        self.problem(
            r.MEMO_ERROR,
            pos,
            f"{op} of memo index {index}, which was never set",
            op=op,
            index=index,
        )
        self.stack.append(Unknown(f"unset memo slot {index}", pos))

    def _op_get(self, pos: int, arg: Any) -> None:
        self._get(pos, arg, "GET")

    def _op_binget(self, pos: int, arg: Any) -> None:
        memo = self.memo
        if arg in memo:
            self.stack.append(memo[arg])
        else:
            self._get(pos, arg, "BINGET")

    def _op_long_binget(self, pos: int, arg: Any) -> None:
        self._get(pos, arg, "LONG_BINGET")

    # -- opcodes: imports and calls ------------------------------------------
    def _op_global(self, pos: int, arg: Any) -> None:
        self.stack.append(self.make_global(arg[0], arg[1], pos))

    def _op_stack_global(self, pos: int, arg: Any) -> None:
        name_v = self._pop(pos, "STACK_GLOBAL")
        module_v = self._pop(pos, "STACK_GLOBAL")
        module, name = literal_str(module_v), literal_str(name_v)
        if module is not None and name is not None:
            self.stack.append(self.make_global(module, name, pos))
            return
        if all(isinstance(v, _LITERALS) for v in (module_v, name_v)):
            self.problem(
                r.INVALID_OPERATION,
                pos,
                f"STACK_GLOBAL with non-string operands {render(module_v)}, {render(name_v)}",
                op="STACK_GLOBAL",
            )
        else:
            self.ctx.add(
                r.COMPUTED_GLOBAL,
                f"STACK_GLOBAL at offset {pos} imports {render(module_v)}.{render(name_v)}, "
                "a name computed at load time",
                offset=pos,
                module=render(module_v),
                name=render(name_v),
            )
        self.stack.append(Unknown("computed global", pos))

    def _op_inst(self, pos: int, arg: Any) -> None:
        args = self._pop_mark(pos, "INST")
        glob = self.make_global(arg[0], arg[1], pos)
        result = self.calls.call(glob, tuple(args), None, "INST", pos)
        self.stack.append(result)

    def _op_obj(self, pos: int, arg: Any) -> None:
        items = self._pop_mark(pos, "OBJ")
        if not items:
            self.problem(r.STACK_ERROR, pos, "OBJ with nothing after its MARK", op="OBJ")
            self.stack.append(Unknown("failed OBJ", pos))
            return
        result = self.calls.call(items[0], tuple(items[1:]), None, "OBJ", pos)
        self.stack.append(result)

    def _op_reduce(self, pos: int, arg: Any) -> None:
        args = self._pop(pos, "REDUCE")
        func = self._pop(pos, "REDUCE")
        self.stack.append(self.calls.call(func, args, None, "REDUCE", pos))

    def _op_newobj(self, pos: int, arg: Any) -> None:
        args = self._pop(pos, "NEWOBJ")
        cls = self._pop(pos, "NEWOBJ")
        self.stack.append(self.calls.call(cls, args, None, "NEWOBJ", pos))

    def _op_newobj_ex(self, pos: int, arg: Any) -> None:
        kwargs = self._pop(pos, "NEWOBJ_EX")
        args = self._pop(pos, "NEWOBJ_EX")
        cls = self._pop(pos, "NEWOBJ_EX")
        self.stack.append(self.calls.call(cls, args, kwargs, "NEWOBJ_EX", pos))

    def _op_build(self, pos: int, arg: Any) -> None:
        state = self._pop(pos, "BUILD")
        inst = self._top(pos, "BUILD")
        self.calls.build(inst, state, pos)

    def _ext(self, pos: int, code: int, op: str) -> None:
        if code <= 0:
            self.problem(r.INVALID_OPERATION, pos, f"{op} with code {code}", op=op)
        else:
            self.ctx.add(
                r.EXTENSION_CODE,
                f"{op} at offset {pos} imports copyreg extension code {code}",
                offset=pos,
                code=code,
            )
        self.stack.append(Unknown(f"extension code {code}", pos))

    def _op_ext1(self, pos: int, arg: Any) -> None:
        self._ext(pos, arg, "EXT1")

    def _op_ext2(self, pos: int, arg: Any) -> None:
        self._ext(pos, arg, "EXT2")

    def _op_ext4(self, pos: int, arg: Any) -> None:
        self._ext(pos, arg, "EXT4")
