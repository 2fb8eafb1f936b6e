"""The per-entry work of verification, compiled where the C extension was built.

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

from trainguard.ledger._index import EDGE_FAST
from trainguard.ledger._merkle import perfect_levels as py_perfect_levels

__all__ = ["COMPILED", "edge_fields", "edge_rows", "gc_paused", "leaf_hashes", "perfect_levels"]

#: ``(leaf, run_id, direction, digest, artifact_kind)``: a row of the edges table.
EdgeRow = tuple[Any, ...]
#: ``(artifact_kind, digest, direction, name or None, run_id)`` of an edge entry.
EdgeFields = tuple[Any, ...]

_sha256 = hashlib.sha256


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block that allocates millions of
    small acyclic objects (tuples, rows): collections triggered by them cost a
    third of such a block's time and find nothing. Cycles made meanwhile are
    collected after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def py_leaf_hashes(datas: list[bytes]) -> list[bytes]:
    """``SHA-256(0x00 || data)`` of each item (TypeError for one that is not bytes)."""
    sha256 = _sha256
    return [sha256(b"\x00" + d).digest() for d in datas]


def py_edge_rows(rows: list[tuple[Any, ...]]) -> tuple[list[EdgeRow], list[int]]:
    """Edge rows of the canonical edge entries among ``(leaf, kind, data, ...)`` rows.

    Returns ``(edges, others)``: the derived row of every row whose kind is
    ``edge`` and whose data is an edge entry in its canonical form
    (:data:`~trainguard.ledger._index.EDGE_FAST`), in row order, and the
    positions of all other rows, which need the full parser.
    """
    edges: list[EdgeRow] = []
    others: list[int] = []
    match = EDGE_FAST
    for i, row in enumerate(rows):
        fast = None
        if (
            isinstance(row, tuple)
            and len(row) >= 3
            and row[1] == "edge"
            and isinstance(row[2], bytes)
        ):
            with contextlib.suppress(UnicodeDecodeError):  # the full path reports it
                fast = match(row[2].decode("utf-8"))
        if fast is None:
            others.append(i)
            continue
        artifact_kind, digest, direction, _name, run_id = fast.groups()
        edges.append((row[0], run_id, direction, digest, artifact_kind))
    return edges, others


def py_edge_fields(datas: list[bytes]) -> list[EdgeFields | None]:
    """``(artifact_kind, digest, direction, name, run_id)`` of each canonical edge
    entry (``name`` ``None`` when absent); ``None`` for any other item."""
    out: list[EdgeFields | None] = []
    match = EDGE_FAST
    for data in datas:
        fast = None
        if isinstance(data, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                fast = match(data.decode("utf-8"))
        out.append(None if fast is None else fast.groups())
    return out


leaf_hashes: Callable[[list[bytes]], list[bytes]] = py_leaf_hashes
perfect_levels: Callable[[Sequence[bytes]], list[list[bytes]]] = py_perfect_levels
edge_rows: Callable[[list[tuple[Any, ...]]], tuple[list[EdgeRow], list[int]]] = py_edge_rows
edge_fields: Callable[[list[bytes]], list[EdgeFields | None]] = py_edge_fields
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
        edge_fields = _speedups.edge_fields
        COMPILED = True
