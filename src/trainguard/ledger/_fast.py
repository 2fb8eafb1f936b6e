"""Per-entry work of verification and blast radius, compiled where the C extension was built.

``trainguard.ledger._speedups`` (C, OpenSSL's SHA-256) is optional: a platform
without a compiler or OpenSSL headers installs without it and gets the Python
functions below (and :func:`~trainguard.ledger._merkle.perfect_levels`), which
compute the same values. Tests compare the two on the
same inputs. ``TRAINGUARD_PURE_PYTHON=1`` forces the Python ones.

Each function is a batch over one verification chunk (~65k entries), so one
call replaces a Python loop.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from trainguard.ledger._index import EDGE_FAST, RUN_FAST, TABLES
from trainguard.ledger._merkle import decompose
from trainguard.ledger._merkle import perfect_levels as py_perfect_levels

__all__ = [
    "COMPILED",
    "batch_piece_hashes",
    "batch_plan_keys",
    "checked_edges",
    "checked_runs",
    "edge_rows",
    "gc_paused",
    "leaf_hashes",
    "perfect_levels",
    "reach",
    "run_fields",
]

#: ``(leaf, run_id, direction, digest, artifact_kind)``: a row of the edges table.
EdgeRow = tuple[Any, ...]
#: ``(run_id, user, accelerator_type, accelerator_count, world_size, started_at,
#: ended_at, env_baseline, hosts)`` of a run entry (``hosts`` a tuple).
RunFields = tuple[Any, ...]
#: ``(leaf, run_id, direction, digest, artifact_kind, name or None)``: an edges
#: row that its entry was checked to say, with the entry's file name.
CheckedEdge = tuple[Any, ...]
#: ``(runs row, hosts)``: a runs row that its entry was checked to say, with the
#: entry's hosts.
CheckedRun = tuple[tuple[Any, ...], tuple[str, ...]]
#: Entries read and hashed, by leaf: ``(data, leaf hash or None where it differs
#: from the stored one)``.
CheckedEntries = dict[Any, tuple[bytes, "bytes | None"]]

_sha256 = hashlib.sha256


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block that allocates millions of
    small acyclic objects (tuples, rows): collections triggered by them cost a
    third of such a block's time and find nothing. Cycles made meanwhile are
    collected by a later full collection.

    On leaving, the objects made meanwhile are moved to the oldest generation
    without a traversal (``freeze`` then ``unfreeze``): otherwise the first
    allocation after the block starts a young collection over all of them (90 ms
    after a blast radius with 10^5 cited entries), and it finds nothing either."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:  # (a process that froze objects keeps them frozen)
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


def py_leaf_hashes(datas: list[bytes]) -> list[bytes]:
    """``SHA-256(0x00 || data)`` of each item (TypeError for one that is not bytes)."""
    sha256 = _sha256
    return [sha256(b"\x00" + d).digest() for d in datas]


def _groups(match: Callable[[str], Any], data: Any) -> tuple[Any, ...] | None:
    """The groups of ``match`` over ``data`` decoded as UTF-8; ``None`` when ``data`` is
    not bytes, not UTF-8 (the full path reports it) or does not match."""
    if not isinstance(data, bytes):
        return None
    try:
        found = match(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return None if found is None else found.groups()


def _split(
    rows: list[tuple[Any, ...]], one: Callable[[Any], tuple[Any, ...] | None]
) -> tuple[list[tuple[Any, ...]], list[int]]:
    """``(taken, others)``: ``one(row)`` of every row it takes (not ``None``), in order,
    and the positions of the rest."""
    taken: list[tuple[Any, ...]] = []
    others: list[int] = []
    for i, row in enumerate(rows):
        got = one(row)
        if got is None:
            others.append(i)
        else:
            taken.append(got)
    return taken, others


def _edge_row(row: Any) -> EdgeRow | None:
    if not (isinstance(row, tuple) and len(row) >= 3 and row[1] == "edge"):
        return None
    fields = _groups(EDGE_FAST, row[2])
    if fields is None:
        return None
    artifact_kind, digest, direction, _name, run_id = fields
    return (row[0], run_id, direction, digest, artifact_kind)


def py_edge_rows(rows: list[tuple[Any, ...]]) -> tuple[list[EdgeRow], list[int]]:
    """Edge rows of the canonical edge entries among ``(leaf, kind, data, ...)`` rows.

    Returns ``(edges, others)``: the derived row of every row whose kind is
    ``edge`` and whose data is an edge entry in its canonical form
    (:data:`~trainguard.ledger._index.EDGE_FAST`), in row order, and the
    positions of all other rows, which need the full parser.
    """
    return _split(rows, _edge_row)


def py_run_fields(datas: list[bytes]) -> list[RunFields | None]:
    """The values of each canonical run entry (:data:`~trainguard.ledger._index.RUN_FAST`)
    that its derived rows hold; ``None`` for any other item."""
    out: list[RunFields | None] = []
    for data in datas:
        fields = _groups(RUN_FAST, data)
        if fields is None:
            out.append(None)
            continue
        count, a_type, ended, env, hosts, run_id, started, user, world = fields
        try:
            ints = int(count), int(world), int(started), None if ended is None else int(ended)
        except ValueError:  # beyond int()'s digit limit: the full path reports it
            out.append(None)
            continue
        out.append(
            (run_id, user, a_type, *ints, env, tuple(hosts[1:-1].split('","')) if hosts else ())
        )
    return out


def py_checked_edges(
    rows: list[tuple[Any, ...]], checked: CheckedEntries
) -> tuple[list[CheckedEdge], list[int]]:
    """A run's edges from their entries, in one pass over rows ``(leaf, run_id, data,
    leaf_hash)`` (:meth:`~trainguard.ledger.storage.Storage.edge_entries`).

    Sets ``checked[leaf] = (data, leaf_hash or None)`` (``None`` where the entry's
    hash differs from the stored one) for every row with an int leaf and bytes data.
    Returns ``(edges, others)``: for each row whose entry is intact, is an edge
    entry in its canonical form (:data:`~trainguard.ledger._index.EDGE_FAST`) and
    names the row's run id, ``(leaf, run_id, direction, digest, artifact_kind,
    name)`` as the entry says them, in row order; and the positions of all other
    rows, which need the full checks.
    """

    def checked_edge(row: Any) -> CheckedEdge | None:
        if not (
            type(row) is tuple and len(row) == 4 and type(row[0]) is int and type(row[2]) is bytes
        ):
            return None
        leaf, run_id, data, stored = row
        intact = type(stored) is bytes and _sha256(b"\x00" + data).digest() == stored
        checked[leaf] = (data, stored if intact else None)
        fields = _groups(EDGE_FAST, data) if intact else None
        if fields is None:
            return None
        kind, digest, direction, name, f_run = fields
        if type(run_id) is str and run_id == f_run:
            return (leaf, run_id, direction, digest, kind, name)
        return None

    return _split(rows, checked_edge)


def checked_runs(
    rows: list[tuple[Any, ...]], checked: CheckedEntries
) -> tuple[list[CheckedRun], list[int]]:
    """Runs rows checked against their entries, over the rows of a join
    ``(*runs row, entry kind, data, leaf_hash)``, with the compiled batch functions.

    Sets ``checked[leaf]`` as :func:`py_checked_edges` does. Returns ``(runs,
    others)``: ``(row, hosts)`` for each row whose entry is intact, is a run entry
    in its canonical form (:data:`~trainguard.ledger._index.RUN_FAST`) and says
    exactly what the row says (row and hosts taken from the entry), in row order;
    and the positions of all other rows, which need the full checks.
    """
    width = len(TABLES["runs"])
    batch = [
        i
        for i, r in enumerate(rows)
        if type(r) is tuple and len(r) == width + 3 and type(r[0]) is int and type(r[-2]) is bytes
    ]
    datas = [rows[i][-2] for i in batch]
    taken: list[CheckedRun] = []
    others = sorted(set(range(len(rows))).difference(batch))
    for i, h, fields in zip(batch, leaf_hashes(datas), run_fields(datas), strict=True):
        row = rows[i]
        leaf, kind, data, stored = row[0], row[-3], row[-2], row[-1]
        intact = h == stored
        checked[leaf] = (data, h if intact else None)
        if intact and kind == "run" and fields is not None:
            said = (leaf, *fields[:8], len(fields[8]))
            if row[:width] == said:
                taken.append((said, fields[8]))
                continue
        others.append(i)
    others.sort()
    return taken, others


def py_reach(
    edges: list[CheckedEdge], artifacts: dict[Any, Any], depth: int, cls: type[tuple[Any, ...]]
) -> tuple[dict[Any, CheckedEdge], list[CheckedEdge], list[CheckedEdge]]:
    """One closure step of a blast radius over checked edges rows.

    Each ``produced`` row whose digest is not in ``artifacts`` adds
    ``artifacts[digest] = cls((digest, kind, name, depth, (run_id,), 0, (leaf,)))``
    and ``new[digest] = row`` (its first producing row). Returns ``(new, again,
    own)``: the later ``produced`` rows of a digest added here, in row order (the
    caller merges them), and every other row whose digest is in ``new``, in row
    order.
    """
    new: dict[Any, CheckedEdge] = {}
    again: list[CheckedEdge] = []
    make = tuple.__new__
    for row in edges:
        if len(row) != 6:
            raise TypeError("reach expects rows of 6 values")
        if not _produced(row[2]):
            continue
        leaf, run_id, _d, digest, kind, name = row
        if digest not in artifacts:
            artifacts[digest] = make(cls, (digest, kind, name, depth, (run_id,), 0, (leaf,)))
            new[digest] = row
        elif digest in new:
            again.append(row)
    own = [r for r in edges if not _produced(r[2]) and r[3] in new]
    return new, again, own


def _produced(direction: Any) -> bool:
    return isinstance(direction, str) and str.__eq__(direction, "produced")


def _check_indexes(size: int, indexes: list[int]) -> None:
    previous = -1
    for i in indexes:
        if type(i) is not int or not previous < i < size:
            raise ValueError("indexes must be increasing ints inside the tree")
        previous = i


def _hash(h: bytes) -> bytes:
    if type(h) is not bytes or len(h) != 32:
        raise TypeError("tree hashes must be 32 bytes")
    return h


def _take(proof: list[bytes], pos: int) -> bytes:
    if pos >= len(proof):
        raise ValueError("the batch proof is too short")
    return _hash(proof[pos])


def _piece_leaves(size: int, indexes: list[int]) -> Iterator[tuple[int, int, list[int]]]:
    """``(level, index, proven leaves relative to the piece)`` of each piece of the tree,
    left to right, up to the last piece holding one of ``indexes`` (checked already)."""
    k, n = 0, len(indexes)
    for level, index in decompose(0, size) if n else []:
        if k >= n:
            break
        lo, hi = index << level, (index + 1) << level
        inside = []
        while k < n and indexes[k] < hi:
            inside.append(indexes[k] - lo)
            k += 1
        yield level, index, inside


def py_batch_plan_keys(size: int, indexes: list[int]) -> list[tuple[int, int]]:
    """The ``(level, index)`` of each hash a batch proof of ``indexes`` (increasing, inside
    the tree) lists, in order, up to the last piece holding a proven leaf
    (:mod:`._multiproof` describes the order)."""
    _check_indexes(size, indexes)
    keys: list[tuple[int, int]] = []
    for level, index, known in _piece_leaves(size, indexes):
        if not known:
            keys.append((level, index))
            continue
        for lv in range(level):
            base = index << (level - lv)  # the piece's first node index at this level
            present = set(known)
            keys.extend((lv, base + (i ^ 1)) for i in known if i ^ 1 not in present)
            known = sorted({i >> 1 for i in known})
    return keys


def py_batch_piece_hashes(
    size: int, indexes: list[int], hashes: list[bytes], proof: list[bytes]
) -> tuple[list[bytes], int]:
    """``(piece hashes, proof hashes consumed)``: the hash of each piece up to the last
    one holding a proven leaf, from the leaf ``hashes`` of ``indexes`` and ``proof``.

    Raises:
        ValueError: the proof is too short (or the indexes are not increasing, inside).
    """
    _check_indexes(size, indexes)
    if len(hashes) != len(indexes):
        raise ValueError("one hash per index")
    # Each hash is checked where it is used, as the compiled walk does (a proof may
    # run on past what the walk needs; the caller decides about the rest).
    for h in hashes:
        _hash(h)
    sha256 = _sha256
    by_index = dict(zip(indexes, hashes, strict=True))
    pos = 0
    out = []
    for level, index, rel in _piece_leaves(size, indexes):
        if not rel:
            out.append(_take(proof, pos))
            pos += 1
            continue
        lo = index << level
        known = {i: by_index[lo + i] for i in rel}
        for _ in range(level):
            parents: dict[int, bytes] = {}
            for i in sorted(known):
                if i & 1 and i ^ 1 in known:
                    continue  # combined with its left sibling already
                if i & 1 or i ^ 1 not in known:
                    sibling = _take(proof, pos)
                    pos += 1
                else:
                    sibling = known[i ^ 1]
                left, right = (sibling, known[i]) if i & 1 else (known[i], sibling)
                parents[i >> 1] = sha256(b"\x01" + left + right).digest()
            known = parents
        out.append(known[0])
    return out, pos


leaf_hashes: Callable[[list[bytes]], list[bytes]] = py_leaf_hashes
perfect_levels: Callable[[Sequence[bytes]], list[list[bytes]]] = py_perfect_levels
edge_rows: Callable[[list[tuple[Any, ...]]], tuple[list[EdgeRow], list[int]]] = py_edge_rows
run_fields: Callable[[list[bytes]], list[RunFields | None]] = py_run_fields
checked_edges: Callable[
    [list[tuple[Any, ...]], CheckedEntries], tuple[list[CheckedEdge], list[int]]
] = py_checked_edges
batch_plan_keys: Callable[[int, list[int]], list[tuple[int, int]]] = py_batch_plan_keys
batch_piece_hashes: Callable[
    [int, list[int], list[bytes], list[bytes]], tuple[list[bytes], int]
] = py_batch_piece_hashes
reach: Callable[
    [list[CheckedEdge], dict[Any, Any], int, type[tuple[Any, ...]]],
    tuple[dict[Any, CheckedEdge], list[CheckedEdge], list[CheckedEdge]],
] = py_reach
COMPILED = False

if os.environ.get("TRAINGUARD_PURE_PYTHON", "") in ("", "0"):
    try:
        from trainguard.ledger import _speedups
    except ImportError:
        pass
    else:
        leaf_hashes = _speedups.leaf_hashes
        perfect_levels = _speedups.perfect_levels
        edge_rows = _speedups.edge_rows
        checked_edges = _speedups.checked_edges
        run_fields = _speedups.run_fields
        batch_plan_keys = _speedups.batch_plan_keys
        batch_piece_hashes = _speedups.batch_piece_hashes
        reach = _speedups.reach
        COMPILED = True
