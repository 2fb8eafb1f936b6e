"""The compiled per-entry work (``_speedups``) computes exactly what its Python twin does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainguard.ledger import _fast, _merkle

try:
    from trainguard.ledger import _speedups
except ImportError:  # not built here: the Python functions are the only ones
    _speedups = None  # type: ignore[assignment]

compiled = pytest.mark.skipif(_speedups is None, reason="the C extension is not built here")

PLAIN = (
    b'{"artifact_kind":"checkpoint","at":5,"digest":"sha256:00","direction":"used",'
    b'"kind":"edge","name":"a.pt","run_id":"r1","size":3,"v":1}'
)


def test_extension_is_built_where_it_can_be() -> None:
    # A machine with a C compiler and OpenSSL's headers builds it; a silent build
    # failure would quietly make verification several times slower.
    if not (shutil.which("cc") and Path("/usr/include/openssl/sha.h").exists()):
        pytest.skip("no C compiler or OpenSSL headers here")
    if os.environ.get("TRAINGUARD_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("pure Python forced (TRAINGUARD_PURE_PYTHON)")
    assert _fast.COMPILED and _speedups is not None


def test_pure_python_can_be_forced() -> None:
    code = "from trainguard.ledger import _fast; print(_fast.COMPILED)"
    env = {**os.environ, "TRAINGUARD_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_tamper_tests_pass_in_pure_python_too() -> None:
    # The Python twins are what a machine without a compiler runs: verification and
    # blast radius must catch every tampering there too, not only on the C path the
    # rest of this suite takes where the extension is built.
    root = Path(__file__).resolve().parents[2]
    tests = [
        "tests/ledger/test_verify_tamper.py",
        "tests/ledger/test_blast.py",
        "tests/ledger/test_multiproof.py",
    ]
    only = "sqlite or not (postgres or pg)"  # the SQLite cases and the backend-free ones
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, "-k", only],
        cwd=root,
        env={**os.environ, "TRAINGUARD_PURE_PYTHON": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout


def test_python_edge_rows_take_plain_edges_and_pass_on_the_rest() -> None:
    rows: list[tuple[Any, ...]] = [
        (0, "edge", PLAIN, b""),
        (1, "run", PLAIN, b""),  # kind column disagrees: the full path reports it
        (2, "edge", PLAIN.replace(b'"r1"', b'"r\\u0031"'), b""),  # an escape
        (3, "edge", PLAIN.decode(), b""),  # text, not bytes
        (4, "edge", PLAIN.replace(b"a.pt", b"a\xff.pt"), b""),  # not UTF-8
    ]
    edges, others = _fast.py_edge_rows(rows)
    assert edges == [(0, "r1", "used", "sha256:00", "checkpoint")]
    assert others == [1, 2, 3, 4]


# -- the C functions against the Python ones ------------------------------------------

_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=10)
_small = st.text(st.sampled_from('ab"\\\x00\x1f\x7fé€😀'), max_size=4)
_int = st.integers(-(2**70), 2**70)


@st.composite
def _entry_bytes(draw: st.DrawFn) -> bytes:
    entry = draw(
        st.fixed_dictionaries(
            {
                "artifact_kind": st.one_of(_text, _small, st.sampled_from(["checkpoint", "env"])),
                "at": _int,
                "digest": st.one_of(_text, _small),
                "direction": st.one_of(st.sampled_from(["used", "produced"]), _small),
                "kind": st.sampled_from(["edge", "edge", "artifact"]),
                "run_id": st.one_of(_text, _small),
                "v": _int,
            },
            optional={"name": _text, "size": _int, "extra": _small},
        )
    )
    text = json.dumps(
        entry, sort_keys=True, separators=(",", ":"), ensure_ascii=draw(st.booleans())
    )
    data = text.encode("utf-8", "surrogatepass")
    # Damage it: a flipped, cut or inserted byte, as a tampered row would hold.
    if draw(st.booleans()) and data:
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        byte = draw(st.integers(0, 255))
        if op == "flip":
            data = data[:at] + bytes([data[at] ^ (1 << (byte % 8))]) + data[at + 1 :]
        elif op == "cut":
            data = data[:at]
        else:
            data = data[:at] + bytes([byte]) + data[at:]
    return data


_row = st.tuples(
    st.integers(0, 2**40),
    st.sampled_from(["edge", "edge", "edge", "run", "éedge"]),
    st.one_of(_entry_bytes(), _entry_bytes(), st.just(PLAIN), st.just("text"), st.none()),
    st.just(b""),
)


@compiled
@settings(max_examples=1500, deadline=None)
@given(st.lists(_row, max_size=8))
def test_edge_rows_agree(rows: list[tuple[Any, ...]]) -> None:
    assert _speedups.edge_rows(rows) == _fast.py_edge_rows(rows)


def _joined(leaf: Any, data: Any, *, run_id: Any = "r1", stored: Any = None) -> tuple[Any, ...]:
    """A row of Storage.edge_entries: the leaf and run id the index gives, then the entry."""
    if stored is None and isinstance(data, bytes):
        stored = _merkle.leaf_hash(data)
    return (leaf, run_id, data, stored)


def test_checked_edges_take_what_an_intact_entry_of_the_run_says() -> None:
    without_name = PLAIN.replace(b',"name":"a.pt"', b"")
    produced = PLAIN.replace(b'"used"', b'"produced"').replace(b'"checkpoint"', b'"dataset"')
    run = b'{"kind":"run","run_id":"r1"}'
    rows: list[tuple[Any, ...]] = [
        _joined(0, PLAIN),
        _joined(1, without_name),
        _joined(2, produced),
        _joined(3, PLAIN, run_id="r2"),  # the index names another run than the entry
        _joined(4, PLAIN, run_id=b"r1"),  # a blob column
        _joined(5, PLAIN, stored=b"\x00" * 32),  # the entry was altered
        _joined(6, None),  # no entry has that leaf
        _joined(7, PLAIN.replace(b'"r1"', b'"r\\u0031"')),  # valid, not canonical
        _joined(8.0, PLAIN),  # a leaf of another type
        _joined(9, run),  # not an edge entry
        (10, "r1", PLAIN, _merkle.leaf_hash(PLAIN), "x"),  # not the join's shape
    ]
    for checked_edges in (_fast.checked_edges, _fast.py_checked_edges):
        checked: dict[Any, tuple[bytes, bytes | None]] = {}
        edges, others = checked_edges(rows, checked)
        assert edges == [
            (0, "r1", "used", "sha256:00", "checkpoint", "a.pt"),
            (1, "r1", "used", "sha256:00", "checkpoint", None),
            (2, "r1", "produced", "sha256:00", "dataset", "a.pt"),
        ]
        assert others == list(range(3, 11))
        # Every entry read is recorded for the evidence, an altered one without its hash.
        assert sorted(checked) == [0, 1, 2, 3, 4, 5, 7, 9]
        assert checked[5] == (PLAIN, None) and checked[0] == (PLAIN, _merkle.leaf_hash(PLAIN))


@st.composite
def _join_row(draw: st.DrawFn) -> tuple[Any, ...]:
    data = draw(st.one_of(_entry_bytes(), st.just(PLAIN), st.just("text"), st.none()))
    try:
        run_id = json.loads(data).get("run_id")
    except (TypeError, ValueError, AttributeError):
        run_id = "r1"
    if draw(st.booleans()):  # the index names another run, or a value of another type
        run_id = draw(st.one_of(_small, st.binary(max_size=3), st.none()))
    leaf = draw(st.one_of(st.integers(0, 2**40), st.integers(0, 2**40), st.floats(), st.none()))
    stored = draw(st.one_of(st.none(), st.binary(min_size=32, max_size=32), st.just("x")))
    return _joined(leaf, data, run_id=run_id, stored=stored)


@compiled
@settings(max_examples=1500, deadline=None)
@given(st.lists(_join_row(), max_size=8))
def test_checked_edges_agree(rows: list[tuple[Any, ...]]) -> None:
    c_checked: dict[Any, Any] = {}
    py_checked: dict[Any, Any] = {}
    assert _speedups.checked_edges(rows, c_checked) == _fast.py_checked_edges(rows, py_checked)
    assert c_checked == py_checked


@compiled
def test_checked_edges_reject_what_is_not_a_list_and_a_dict() -> None:
    with pytest.raises(TypeError):
        _speedups.checked_edges((), {})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.checked_edges([], [])  # type: ignore[arg-type]


@compiled
def test_edge_rows_agree_on_every_prefix_and_single_byte_change() -> None:
    rows = [(i, "edge", PLAIN[:i], b"") for i in range(len(PLAIN) + 1)]
    rows += [
        (i * 256 + b, "edge", PLAIN[:i] + bytes([b]) + PLAIN[i + 1 :], b"")
        for i in range(len(PLAIN))
        for b in range(256)
    ]
    c_edges, c_others = _speedups.edge_rows(rows)
    assert (c_edges, c_others) == _fast.py_edge_rows(rows)
    assert len(c_edges) > len(PLAIN)  # many one-byte changes are still canonical edges


@compiled
def test_edge_rows_memo_never_leaks_between_values() -> None:
    # The artifact kind and direction reuse the previous str object when the
    # bytes repeat: values of other lengths, and non-ASCII ones, must not match it.
    kinds = ["checkpoint", "checkpoinT", "check", "checkpointX", "chéckpoint", "checkpoint", ""]
    rows = [
        (i, "edge", PLAIN.replace(b'"checkpoint"', json.dumps(k).encode()), b"")
        for i, k in enumerate(kinds)
    ]
    rows = [(r[0], r[1], r[2].replace(b"\\u00e9", "é".encode()), r[3]) for r in rows]
    edges, others = _speedups.edge_rows(rows)
    assert others == []
    assert [e[4] for e in edges] == kinds


@compiled
def test_edge_rows_rejects_what_is_not_a_list() -> None:
    with pytest.raises(TypeError):
        _speedups.edge_rows(tuple())  # type: ignore[arg-type]


@compiled
@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40))
def test_hashes_agree(datas: list[bytes]) -> None:
    leaves = _speedups.leaf_hashes(datas)
    assert leaves == _fast.py_leaf_hashes(datas) == [_merkle.leaf_hash(d) for d in datas]
    assert _speedups.perfect_levels(leaves) == _fast.py_perfect_levels(leaves)
    # Arbitrary lengths (a tampered node row) hash as the Python code hashes them.
    assert _speedups.perfect_levels(datas) == _fast.py_perfect_levels(datas)


@compiled
def test_hashes_reject_what_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        _speedups.leaf_hashes([b"a", "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        _fast.py_leaf_hashes([b"a", "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        _speedups.perfect_levels([b"a", None])  # type: ignore[list-item]


def _mth(data: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, MTH, as written there (n >= 1)."""
    if len(data) == 1:
        return _merkle.leaf_hash(data[0])
    k = 1 << ((len(data) - 1).bit_length() - 1)
    return _merkle.node_hash(_mth(data[:k]), _mth(data[k:]))


def test_perfect_levels_match_the_rfc_definition() -> None:
    data = [bytes([i]) * i for i in range(16)]
    levels = _fast.perfect_levels(_fast.leaf_hashes(data))
    assert [len(level) for level in levels] == [16, 8, 4, 2, 1]
    assert levels[-1][0] == _mth(data)
    assert levels[2][3] == _mth(data[12:16])


def _batch_case(size: int, data: st.DataObject) -> tuple[list[int], list[bytes], list[bytes]]:
    """Increasing leaf indexes of a tree of ``size``, their leaf hashes, and a batch proof
    of them (the hashes the plan names, from the tree itself)."""
    indexes = sorted(set(data.draw(st.lists(st.integers(0, size - 1), max_size=30))))
    levels_of = _fast.py_perfect_levels(_fast.py_leaf_hashes([b"%d" % i for i in range(size)]))
    hashes = [levels_of[0][i] for i in indexes]
    keys = _fast.py_batch_plan_keys(size, indexes)
    proof = [
        levels_of[level][index]
        if level < len(levels_of) and index < len(levels_of[level])
        else _merkle.fold([])
        for level, index in keys
    ]
    return indexes, hashes, proof


@compiled
@settings(max_examples=300, deadline=None)
@given(st.integers(1, 200), st.data())
def test_batch_walks_agree(size: int, data: st.DataObject) -> None:
    indexes, hashes, proof = _batch_case(size, data)
    assert _speedups.batch_plan_keys(size, indexes) == _fast.py_batch_plan_keys(size, indexes)
    want = _fast.py_batch_piece_hashes(size, indexes, hashes, proof)
    assert _speedups.batch_piece_hashes(size, indexes, hashes, proof) == want
    # A longer proof is consumed as far as the walk goes, by both.
    extra = [*proof, bytes(32)]
    assert _speedups.batch_piece_hashes(size, indexes, hashes, extra) == want
    # A changed hash changes the pieces the same way in both.
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bent = [*proof[:k], bytes(32), *proof[k + 1 :]]
        assert _speedups.batch_piece_hashes(
            size, indexes, hashes, bent
        ) == _fast.py_batch_piece_hashes(size, indexes, hashes, bent)
        # A proof cut short is refused by both.
        with pytest.raises(ValueError):
            _speedups.batch_piece_hashes(size, indexes, hashes, proof[:-1])
        with pytest.raises(ValueError):
            _fast.py_batch_piece_hashes(size, indexes, hashes, proof[:-1])


@compiled
@pytest.mark.parametrize("indexes", [[3, 2], [1, 1], [-1], [5], [0, 9], [True], [1.0], [2**70]])
def test_batch_walks_refuse_indexes_out_of_order_or_outside(indexes: list[Any]) -> None:
    for walk in (_speedups.batch_plan_keys, _fast.py_batch_plan_keys):
        with pytest.raises((ValueError, TypeError, OverflowError)):
            walk(5, indexes)
    for pieces in (_speedups.batch_piece_hashes, _fast.py_batch_piece_hashes):
        with pytest.raises((ValueError, TypeError, OverflowError)):
            pieces(5, indexes, [bytes(32)] * len(indexes), [bytes(32)] * 8)


@compiled
def test_batch_walks_refuse_hashes_of_another_size() -> None:
    for pieces in (_speedups.batch_piece_hashes, _fast.py_batch_piece_hashes):
        with pytest.raises(TypeError):
            pieces(4, [0], [bytes(31)], [bytes(32)] * 2)
        with pytest.raises(TypeError):
            pieces(4, [0], [bytes(32)], [bytes(32), "x" * 32])
        with pytest.raises(ValueError):
            pieces(4, [0, 1], [bytes(32)], [bytes(32)])
    # What lies past the hashes the walk takes is the caller's to judge, in both.
    for pieces in (_speedups.batch_piece_hashes, _fast.py_batch_piece_hashes):
        assert pieces(4, [0], [bytes(32)], [bytes(32), bytes(32), None])[1] == 2  # type: ignore[list-item]


def test_gc_paused_hands_its_objects_to_the_oldest_generation() -> None:
    import gc

    gc.collect()
    with _fast.gc_paused():
        assert not gc.isenabled()
        made = [(i, str(i)) for i in range(50_000)]
    assert gc.isenabled()
    # Nothing made in the block is left for a young collection to walk...
    assert gc.get_count()[0] < 1_000
    assert gc.is_tracked(made[0])
    # ...and a process that froze its own objects keeps them frozen.
    keep = [[] for _ in range(100)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with _fast.gc_paused():
            more = [(i, str(i)) for i in range(50_000)]
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    assert len(more) == len(made) and keep


def _run_join(leaf: Any, run: Any = None, **change: Any) -> tuple[Any, ...]:
    """A row of the runs-entries join for a canonical run entry: the row its entry
    says (with ``change`` applied to the row's columns), then the entry's columns."""
    from tests.ledger import _factory as f
    from trainguard.ledger._index import TABLES
    from trainguard.ledger._ledger import prepare

    entry = prepare(run or f.run("r1", hosts=("gpu-002", "gpu-001"), env=f.digest("env")))
    ((_table, values),) = [r for r in entry.rows if r[0] == "runs"]
    row = dict(zip(TABLES["runs"], (leaf, *values), strict=True))
    row.update(change)
    return (*row.values(), entry.kind, entry.data, entry.leaf_hash)


def test_checked_runs_pass_only_rows_their_intact_entry_says() -> None:
    good = _run_join(0)
    data = good[-2]
    canonical_not = data.replace(b'"r1"', b'"r\\u0031"')
    rows: list[tuple[Any, ...]] = [
        good,
        _run_join(1, user_name="eve"),  # a column altered
        _run_join(2, accelerator_count=800),
        _run_join(3, ended_at=None),
        _run_join(4, n_hosts=1),  # a host row deleted, and the count with it
        (5, *good[1:-1], b"\x00" * 32),  # the entry was altered
        (6, *good[1:-3], "edge", *good[-2:]),  # an entry of another kind
        (7, *good[1:-2], canonical_not, _merkle.leaf_hash(canonical_not)),  # not canonical
        (8, *good[1:-2], None, None),  # no entry has that leaf
        (9.0, *good[1:]),  # a leaf of another type
        good[:-1],  # not a joined row
        _run_join(11, user_name=b"ana"),  # a blob column
    ]
    checked: dict[Any, tuple[bytes, bytes | None]] = {}
    runs, others = _fast.checked_runs(rows, checked)
    assert [r[0][0] for r in runs] == [0]
    row, hosts = runs[0]
    assert row == good[:-3] and sorted(hosts) == ["gpu-001", "gpu-002"]
    assert others == list(range(1, 12))
    # Every entry read is recorded for the evidence, an altered one without its hash.
    assert sorted(checked) == [0, 1, 2, 3, 4, 5, 6, 7, 11]
    assert checked[7] == (canonical_not, _merkle.leaf_hash(canonical_not))
    assert checked[5] == (data, None) and checked[0] == (data, _merkle.leaf_hash(data))


class _Art(tuple):  # a tuple subclass, as AffectedArtifact is
    __slots__ = ()


def _edge(leaf: Any, run: Any, direction: Any, digest: Any) -> tuple[Any, ...]:
    return (leaf, run, direction, digest, "checkpoint", f"n{leaf}")


def test_reach_adds_what_is_first_reached_and_hands_back_the_rest() -> None:
    artifacts: dict[Any, Any] = {"d0": "from an earlier step"}
    edges = [
        _edge(1, "r1", "produced", "d1"),
        _edge(2, "r1", "used", "d0"),  # a digest reached before: not this step's
        _edge(3, "r2", "produced", "d1"),  # d1 again: handed back to be merged
        _edge(4, "r2", "produced", "d0"),  # reached earlier: nothing to do
        _edge(5, "r2", "used", "d1"),  # the frontier's own reader of d1
        _edge(6, "r3", b"produced", "d2"),  # a direction of another type: not produced
        _edge(7, "r3", "produced", "d3"),
    ]
    new, again, own = _fast.py_reach(edges, artifacts, 4, _Art)
    assert new == {"d1": edges[0], "d3": edges[6]}
    assert again == [edges[2]] and own == [edges[4]]
    assert type(artifacts["d1"]) is _Art
    assert artifacts["d1"] == ("d1", "checkpoint", "n1", 4, ("r1",), 0, (1,))
    assert artifacts["d0"] == "from an earlier step" and "d2" not in artifacts


_cell = st.sampled_from(["d1", "d2", "d3", "d4", 7, b"d1"])


@compiled
@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 50),
            st.sampled_from(["r1", "r2", "r3"]),
            st.sampled_from(["produced", "produced", "used", "other", b"produced", None]),
            _cell,
        ),
        max_size=12,
    ),
    st.sets(_cell, max_size=3),
)
def test_reach_agrees(rows: list[tuple[Any, ...]], before: set[Any]) -> None:
    edges = [_edge(*r) for r in rows]
    c_art = {d: ("earlier", d) for d in before}
    py_art = dict(c_art)
    c = _speedups.reach(edges, c_art, 2, _Art)
    assert c == _fast.py_reach(edges, py_art, 2, _Art)
    assert c_art == py_art and list(c_art) == list(py_art)  # the same, in the same order
    assert all(type(v) is _Art for k, v in c_art.items() if k not in before)


@compiled
def test_reach_refuses_rows_of_another_shape_and_a_class_not_a_tuple() -> None:
    with pytest.raises(TypeError):
        _speedups.reach([(1, "r", "produced", "d")], {}, 1, _Art)
    with pytest.raises(TypeError):
        _speedups.reach([], {}, 1, dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # an unhashable digest, as the dict would say
        _speedups.reach([_edge(1, "r", "produced", [])], {}, 1, _Art)
    with pytest.raises(TypeError):
        _fast.py_reach([_edge(1, "r", "produced", [])], {}, 1, _Art)
