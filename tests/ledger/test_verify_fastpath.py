"""The edge and run fast paths (verify, blast cross-check) read exactly what the full JSON parser reads, or decline."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainguard.ledger import _canonical
from trainguard.ledger._fast import py_run_fields
from trainguard.ledger._index import EDGE_FAST as _EDGE
from trainguard.ledger._index import rows_of
from trainguard.ledger.records import Run

try:
    from trainguard.ledger import _speedups
except ImportError:  # not built here: the Python functions are the only ones
    _speedups = None  # type: ignore[assignment]

_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=12)
_int = st.integers(-(2**53), 2**53)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "artifact_kind": _text,
            "at": _int,
            "digest": _text,
            "direction": _text,
            "kind": st.sampled_from(["edge", "artifact"]),
            "run_id": _text,
            "v": _int,
        },
        optional={"name": _text, "size": _int, "extra": _text},
    ),
    st.booleans(),
)
def test_fast_path_agrees_with_the_parser(entry: dict[str, object], ascii_only: bool) -> None:
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
    match = _EDGE(text)
    if match is None:
        return  # declined: the full path handles it
    parsed = json.loads(text)
    assert parsed["kind"] == "edge" and "extra" not in parsed
    ((table, values),) = rows_of(parsed)
    artifact_kind, digest, direction, name, run_id = match.groups()
    assert (table, values) == ("edges", (run_id, direction, digest, artifact_kind))
    assert name == parsed.get("name")


def test_fast_path_takes_plain_edges_and_declines_odd_ones() -> None:
    plain = (
        '{"artifact_kind":"checkpoint","at":5,"digest":"sha256:00","direction":"used",'
        '"kind":"edge","name":"a.pt","run_id":"r1","size":3,"v":1}'
    )
    assert _EDGE(plain) is not None
    for odd in (
        plain.replace('"r1"', '"r\\u0031"'),  # an escape: same value, other text
        plain.replace('"v":1}', '"v":1,"x":2}'),  # an unknown key
        plain.replace('"at":5', '"at":05'),  # not JSON
        plain + " ",
        plain.replace('"run_id":"r1"', '"run_id":"r1","run_id":"r2"'),  # duplicate key
    ):
        assert _EDGE(odd) is None


# -- run entries -------------------------------------------------------------------------

_host = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), min_size=0, max_size=6)
_RUN_REQUIRED = {
    "accelerator_count": _int,
    "accelerator_type": _text,
    "hosts": st.lists(st.one_of(_host, _host, _int), max_size=3),
    "kind": st.sampled_from(["run", "run", "run_end"]),
    "run_id": _text,
    "started_at": _int,
    "user": _text,
    "v": _int,
    "world_size": _int,
}
_RUN_OPTIONAL = {
    "code_commit": _text,
    "code_diff_hash": _text,
    "command": _text,
    "config_hash": _text,
    "data_manifest": _text,
    "ended_at": st.one_of(_int, st.none()),
    "env_baseline": st.one_of(_text, st.none()),
    "job": _text,
    "seeds": st.dictionaries(_text, st.one_of(_int, _int, _text), max_size=3),
    "extra": _text,
}


def _run_rows(fields: tuple) -> list[tuple[str, tuple]]:
    hosts = fields[8]
    return [("runs", (*fields[:8], len(hosts))), *(("run_hosts", (h,)) for h in hosts)]


@settings(max_examples=600, deadline=None)
@given(
    st.fixed_dictionaries(_RUN_REQUIRED, optional=_RUN_OPTIONAL),
    st.booleans(),
    st.sets(st.sampled_from(sorted(_RUN_REQUIRED)), max_size=2),
)
def test_run_fast_path_agrees_with_the_parser(
    entry: dict[str, object], ascii_only: bool, drop: set[str]
) -> None:
    for key in drop:  # a required key missing: the full path reports it
        entry.pop(key)
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
    (fields,) = py_run_fields([text.encode("utf-8", "surrogatepass")])
    if fields is None:
        return  # declined: the full path handles it
    parsed = json.loads(text)
    assert parsed["kind"] == "run" and "extra" not in parsed
    assert rows_of(parsed) == _run_rows(fields)


ENV = "sha256:" + "0" * 64


def test_run_fast_path_takes_plain_runs_and_declines_odd_ones() -> None:
    record = Run(
        "r1",
        "ana",
        ("gpu-1", "gpu-2"),
        16,
        "H100",
        16,
        100,
        ended_at=200,
        command="torchrun train.py",
        code_commit="a" * 40,
        env_baseline=ENV,
        seeds={"torch": 0, "numpy": 1},
    )
    plain = _canonical.encode(record.to_json())
    minimal = _canonical.encode(Run("r2", "bob", ("gpu-3",), 1, "A100", 1, 5).to_json())
    assert py_run_fields([plain, minimal]) == [
        ("r1", "ana", "H100", 16, 16, 100, 200, ENV, ("gpu-1", "gpu-2")),
        ("r2", "bob", "A100", 1, 1, 5, None, None, ("gpu-3",)),
    ]
    for odd in (
        plain.replace(b"train.py", b'train.py \\"x\\"'),  # an escape in a skipped string
        plain.replace(b"train.py", b"train\xff.py"),  # not UTF-8 in a skipped string
        plain.replace(b'"v":1,', b'"v":1,"x":2,'),  # an unknown key
        plain.replace(b'"started_at":100', b'"started_at":1' + b"0" * 5000),  # int() refuses it
        plain.replace(b'"hosts":["gpu-1",', b'"hosts":[1,'),  # a host that is not a string
        plain.replace(b'"user":"ana",', b""),  # a required key missing
        plain + b" ",
    ):
        assert py_run_fields([odd]) == [None], odd
        if _speedups is not None:
            assert _speedups.run_fields([odd]) == [None], odd


@pytest.mark.skipif(_speedups is None, reason="the C extension is not built here")
@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.fixed_dictionaries(_RUN_REQUIRED, optional=_RUN_OPTIONAL),
            st.booleans(),
            st.integers(0, 10_000),
            st.sampled_from(["keep", "flip", "cut", "insert"]),
        ),
        max_size=6,
    )
)
def test_run_fields_agree(items: list[tuple[dict, bool, int, str]]) -> None:
    datas = []
    for entry, ascii_only, at, op in items:
        text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
        data = text.encode("utf-8", "surrogatepass")
        at %= len(data)
        if op == "flip":
            data = data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]
        elif op == "cut":
            data = data[:at]
        elif op == "insert":
            data = data[:at] + b"\xc3" + data[at:]
        datas.append(data)
    assert _speedups.run_fields(datas) == py_run_fields(datas)
