"""The symbolic machine follows pickle.py's stack, mark and memo semantics exactly."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from tests.scan.pickle._samples import P
from trainguard.errors import LimitExceeded
from trainguard.findings import Finding
from trainguard.scan import ScanContext, ScanLimits
from trainguard.scan.pickle import PickleSummary, scan_pickle
from trainguard.scan.pickle._opcodes import Blob, ByteArray, Str8
from trainguard.scan.pickle._values import Call, Global, SDict, SSet, Unknown


def run(data: bytes, limits: ScanLimits | None = None) -> tuple[PickleSummary, list[Finding]]:
    ctx = ScanContext("t.pkl", limits or ScanLimits())
    summary = scan_pickle(data, ctx)
    return summary, ctx.findings


def rules(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


_CONSTRUCTORS = {
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.bytearray": bytearray,
    "builtins.bytes": bytes,
}


def to_python(value: Any) -> Any:
    """Our symbolic value as the Python object it stands for (test data only)."""
    if isinstance(value, list):
        return [to_python(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_python(v) for v in value)
    if isinstance(value, SDict):
        return {to_python(k): to_python(v) for k, v in value.pairs}
    if isinstance(value, SSet):
        items = {to_python(v) for v in value.items}
        return frozenset(items) if value.frozen else items
    if isinstance(value, Str8):
        return value.text()
    if isinstance(value, Blob):
        return value.tobytes()
    if isinstance(value, ByteArray):
        return bytearray(to_python(value.data))
    if isinstance(value, Call) and isinstance(value.func, Global):
        args = [to_python(a) for a in value.args]
        if value.func.key == "_codecs.encode":
            return args[0].encode(args[1])
        return _CONSTRUCTORS[value.func.key](*args)
    return value


DATA: dict[str, Any] = {
    "ints": [0, 1, -1, 2**40, -(2**70)],
    "text": ["", "é€", "x" * 400],
    "bytes": [b"", b"\x00\x01", b"y" * 400],
    "nested": (1, (2, [3, {"k": (4,)}])),
    "set": {1, 2, 3},
    "frozen": frozenset({"a"}),
    "bytearray": bytearray(b"ab"),
    "flags": [None, True, False, 1.5],
}


@pytest.mark.parametrize("proto", range(6))
def test_machine_result_equals_the_pickled_object(proto: int) -> None:
    summary, findings = run(pickle.dumps(DATA, protocol=proto))
    assert summary.complete
    # Protocols 0-1 spell b"" and frozensets as calls of builtins (LOW: not weights-only).
    assert {(f.rule, f.evidence["name"]) for f in findings} <= {
        ("pickle.non-weights-global", "bytes"),
        ("pickle.non-weights-global", "frozenset"),
    }
    assert to_python(summary.result) == DATA
    assert summary.protocol == (proto if proto >= 2 else None)


@pytest.mark.parametrize("proto", range(6))
def test_shared_references_stay_shared(proto: int) -> None:
    shared: list[int] = []
    summary, _ = run(pickle.dumps([shared, shared], protocol=proto))
    first, second = summary.result
    assert first is second


def test_recursive_list_is_the_same_object() -> None:
    loop: list[Any] = []
    loop.append(loop)
    summary, findings = run(pickle.dumps(loop, protocol=2))
    assert findings == [] and summary.result[0] is summary.result


def test_memoize_uses_len_of_memo_after_explicit_puts() -> None:
    # BINPUT 5 then MEMOIZE stores at len(memo) == 1, not 6.
    data = bytes(P(4).uni("a").put(5).pop().uni("b").memoize().pop().get(1).stop())
    summary, findings = run(data)
    assert summary.result == "b" and findings == []


def test_memo_overwrite_returns_the_last_value_stored() -> None:
    data = bytes(P(2).uni("first").put(0).pop().uni("second").put(0).pop().get(0).stop())
    summary, _ = run(data)
    assert summary.result == "second"


def test_get_of_unset_memo_is_reported_and_continues() -> None:
    data = bytes(P(2).get(7).pop().int_(1).stop())
    summary, findings = run(data)
    assert rules(findings) == ["pickle.memo-error"]
    assert summary.complete and summary.result == 1


def test_negative_put_is_a_memo_error() -> None:
    _, findings = run(b"K\x01p-1\n.")
    assert rules(findings) == ["pickle.memo-error"]


def test_pop_on_empty_frame_pops_the_mark() -> None:
    # MARK, POP (pops the mark, not an item), then one item left for STOP.
    summary, findings = run(b"K\x05(0.")
    assert findings == [] and summary.result == 5


def test_mark_fences_the_stack() -> None:
    # TUPLE2 right after MARK cannot reach the items below the mark.
    _, findings = run(b"K\x01K\x02(\x86.")
    assert "pickle.stack-error" in rules(findings)


def test_tuple_without_mark_is_a_stack_error() -> None:
    _, findings = run(b"K\x01t.")
    assert rules(findings)[0] == "pickle.stack-error"


def test_underflow_reports_and_continues() -> None:
    _, findings = run(b"R0K\x01.")
    assert rules(findings).count("pickle.stack-error") >= 1


def test_stop_with_leftovers_is_low() -> None:
    _, findings = run(b"K\x01K\x02.")
    assert [(f.rule, f.severity.name) for f in findings] == [("pickle.leftover-stack", "LOW")]


def test_dup_and_append_share_the_list() -> None:
    summary, _ = run(b"]2K\x01a0.")
    assert summary.result == [1]


def test_dict_and_setitems_keep_unhashable_keys() -> None:
    summary, findings = run(b"}(]K\x01u.")
    assert findings == [] and isinstance(summary.result, SDict)
    assert summary.result.pairs == [([], 1)]


def test_stack_global_with_memo_strings_resolves() -> None:
    data = bytes(
        P(4)
        .uni("collections")
        .memoize()
        .uni("OrderedDict")
        .memoize()
        .raw(b"\x93")
        .raw(b")R")
        .stop()
    )
    summary, findings = run(data)
    assert summary.globals == ("collections.OrderedDict",) and findings == []


def test_persistent_ids_are_recorded_without_findings() -> None:
    pid = bytes(
        P(2)
        .mark()
        .uni("storage")
        .global_("torch", "FloatStorage")
        .uni("0")
        .uni("cpu")
        .int_(4)
        .tuple()
        .raw(b"Q")
        .stop()
    )
    summary, findings = run(pid)
    assert findings == []
    assert summary.persistent_ids[0][0] == "storage"
    assert summary.persistent_ids[0][1].key == "torch.FloatStorage"


def test_text_persid_is_recorded() -> None:
    summary, findings = run(b"Pkey\n.")
    assert summary.persistent_ids == ("key",) and findings == []


def test_unknown_value_after_extension() -> None:
    summary, findings = run(b"\x80\x02\x82\x07)R.")
    assert rules(findings)[:1] == ["pickle.extension-code"]
    assert "pickle.computed-call" in rules(findings)
    assert isinstance(summary.result, Call) and isinstance(summary.result.func, Unknown)


def test_python2_names_are_mapped_below_protocol_3() -> None:
    summary, findings = run(b"c__builtin__\nset\n(]tR.")
    assert summary.globals == ("builtins.set",) and findings == []


@pytest.mark.parametrize(
    ("field", "data"),
    [
        ("pickle_memo", b"".join(b"K\x01p%d\n0" % i for i in range(6000)) + b"N."),
        ("pickle_stack", b"K\x01" * 6000 + b"."),
        ("pickle_opcodes", b"K\x010" * 6000 + b"N."),
    ],
)
def test_limits_raise(field: str, data: bytes) -> None:
    limits = ScanLimits(**{field: 100})
    with pytest.raises(LimitExceeded) as info:
        run(data, limits)
    assert info.value.limit == field


def test_time_budget_is_checked_during_the_loop() -> None:
    data = b"K\x010" * 10_000 + b"N."
    with pytest.raises(LimitExceeded) as info:
        run(data, ScanLimits(file_seconds=0.0))
    assert info.value.limit == "file_seconds"


def test_findings_before_a_limit_hit_are_kept() -> None:
    data = b"cos\nsystem\n" + b"K\x01" * 6000 + b"."
    ctx = ScanContext("t.pkl", ScanLimits(pickle_stack=100))
    with pytest.raises(LimitExceeded):
        scan_pickle(data, ctx)
    assert "pickle.dangerous-global" in rules(ctx.findings)


def test_problem_reports_are_capped_per_stream() -> None:
    _, findings = run(b"0" * 50 + b"N.")
    errors = [f for f in findings if f.rule == "pickle.stack-error"]
    assert len(errors) == 11 and errors[-1].evidence["count"] == 40
