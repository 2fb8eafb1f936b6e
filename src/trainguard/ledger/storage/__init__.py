"""Ledger storage: the handful of operations the ledger needs, and two backends.

:class:`Storage` is the contract; :mod:`.sqlite` (the embedded default, one
WAL file) and :mod:`.postgres` (the cluster backend, psycopg 3) implement it,
and one contract-test module runs against both. :func:`open_storage` picks
the backend from a ledger URL (see :mod:`._url` for the one rule).

Storage is deliberately dumb: it keeps log entries, the hashes of perfect
Merkle subtrees, derived index rows and signed tree heads, and serializes
appends so leaf indexes have no gaps or duplicates. Only subtrees of level
:data:`NODE_LEVEL` (8 leaves) and up are stored: a lower one is recomputed
from at most 4 leaf hashes when a proof needs it, so an append writes n/8
node rows instead of n. Ledgers created before that store every level and
keep doing so (``meta.node_level``, absent there, means 1). It never decides what is
valid; :mod:`trainguard.ledger.verify` does, from the log alone.

Example:
    >>> from trainguard.ledger.storage import open_storage
    >>> store = open_storage("sqlite:////tmp/example-ledger.db")  # doctest: +SKIP
    >>> store.init("example")  # doctest: +SKIP
    'example'
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from trainguard.ledger._index import Row
from trainguard.ledger.signing import SignedTreeHead
from trainguard.ledger.storage._url import (
    ENV_VAR,
    LedgerURL,
    data_dir,
    default_url,
    parse_url,
    resolve_url,
)

__all__ = [
    "ENV_VAR",
    "NODE_LEVEL",
    "AppendResult",
    "LedgerURL",
    "PreparedEntry",
    "Storage",
    "data_dir",
    "default_url",
    "node_id",
    "open_storage",
    "parse_url",
    "resolve_url",
]


#: The lowest level of Merkle subtrees a new ledger stores (2**3 = 8 leaves). Level 4
#: would save another n/16 rows, but then an inclusion proof reads 15 leaf hashes.
NODE_LEVEL = 3


class PreparedEntry(NamedTuple):
    """One entry ready to store: its canonical bytes, leaf hash and derived rows.

    A named tuple rather than a dataclass: appends build one per entry.
    """

    kind: str
    data: bytes
    leaf_hash: bytes
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class AppendResult:
    """What an acknowledged (committed) append produced.

    Attributes:
        first: the leaf index of the first entry appended.
        size: the tree size after the append.
        root: the Merkle root at ``size``.
    """

    first: int
    size: int
    root: bytes


def node_id(level: int, index: int) -> int:
    """The storage key of perfect subtree ``(level, index)``, ``level >= 1``.

    Ordered by (last leaf covered, level): the order in which a left-to-right
    pass over the leaves completes the subtrees, so verification can compare
    stored nodes with recomputed ones in one sequential read.
    """
    return ((((index + 1) << level) - 1) << 6) | level


class Storage(Protocol):
    """What a ledger backend provides. All methods raise ``StorageError`` on backend failures."""

    url: LedgerURL
    #: The database works in processes of its own (a server): reads on a second
    #: connection then take little of this process, and reading ahead what may
    #: go unused pays. (SQLite works in this process, under its GIL.)
    separate_process: bool

    def init(self, origin: str) -> str:
        """Create the tables if missing; return the log's origin (the stored one if it exists)."""
        ...

    def origin(self) -> str | None:
        """The log's origin, or ``None`` when the ledger was never initialised."""
        ...

    def append(self, entries: Sequence[PreparedEntry]) -> AppendResult:
        """Append atomically after every committed entry; returns once durable."""
        ...

    def size(self) -> int:
        """One past the highest stored leaf index (the tree size if nothing was deleted)."""
        ...

    def entries(self, start: int, stop: int) -> list[tuple[int, str, bytes, bytes]]:
        """``(leaf, kind, data, leaf_hash)`` for stored leaves in ``[start, stop)``, by leaf."""
        ...

    def entries_at(self, leaves: Collection[int]) -> list[tuple[int, str, bytes, bytes]]:
        """``(leaf, kind, data, leaf_hash)`` for the stored leaves among ``leaves``, by leaf."""
        ...

    def nodes(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        """``(node_id, hash)`` for stored nodes with ``start <= node_id < stop``, by id."""
        ...

    def perfect(self, keys: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Hashes of perfect subtrees ``(level, index)``; level 0 is a leaf hash. Missing keys are absent.

        A level below :meth:`node_level` is computed from its stored leaf hashes.
        """
        ...

    def node_level(self) -> int:
        """The lowest level of stored tree nodes: :data:`NODE_LEVEL`, or 1 for older ledgers."""
        ...

    def rows(self, table: str, start: int, stop: int) -> list[tuple[Any, ...]]:
        """Rows of a derived table whose leaf is in ``[start, stop)``, ordered by leaf."""
        ...

    def select(self, table: str, column: str, values: Collection[Any]) -> list[tuple[Any, ...]]:
        """Rows of a derived table whose indexed ``column`` is one of ``values``, by leaf."""
        ...

    def rows_with_entries(
        self, table: str, column: str, values: Collection[Any]
    ) -> list[tuple[Any, ...]]:
        """:meth:`select`'s rows, each with the entry its leaf names:
        ``(*row, kind, data, leaf_hash)`` by leaf, the last three ``None`` where no
        entry has that leaf."""
        ...

    def edge_entries(self, run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        """The ``edges`` of ``run_ids`` as their ``run_id`` index finds them, each with
        the entry its leaf names: ``(leaf, run_id, data, leaf_hash)`` by leaf, the
        last two ``None`` where no entry has that leaf. The rows' other columns are
        not read: the entries say them (and must say this run id)."""
        ...

    def readers(self, digests: Collection[str], run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        """``edges`` rows naming one of ``digests``, except the rows of ``run_ids``
        themselves (:meth:`edge_entries` has those), by leaf."""
        ...

    def product_readers(
        self, run_ids: Collection[str]
    ) -> tuple[list[tuple[Any, ...]], tuple[int, str]]:
        """:meth:`readers` of every digest a ``produced`` row of ``run_ids`` names, read
        in one statement, and what those rows say: ``(how many, SHA-256 hex of their
        digests in leaf order, joined by newlines)``. The readers are only as good as
        the rows: a caller compares that fingerprint with what the entries say."""
        ...

    def runs_in_window(self, start: int, stop: int) -> list[tuple[Any, ...]]:
        """``runs`` rows that started before ``stop`` (callers check the end against ``start``)."""
        ...

    def runs_started(self, start: int, stop: int, limit: int) -> list[tuple[Any, ...]]:
        """The first ``limit`` ``runs`` rows that started in ``[start, stop)``, by start time."""
        ...

    def newest_runs(self, offset: int, limit: int) -> tuple[int, list[tuple[Any, ...]]]:
        """``(number of run ids, rows)``: each run id's first ``runs`` row, newest start
        first (ties: latest leaf first), rows ``[offset, offset + limit)`` of that order."""
        ...

    def run_totals(self, as_of: int) -> list[tuple[str, int, int]]:
        """``(accelerator_type, runs, accelerator_seconds)`` over all runs; a run's end is its
        ``ended_at``, else its latest ``run_end``, else ``as_of`` (still running)."""
        ...

    def counts(self) -> dict[str, int]:
        """Row counts: ``entries`` (one past the highest leaf), each derived table, the
        ``n_hosts`` and ``n_files`` sums, and ``out_of_range`` (derived rows beyond the log)."""
        ...

    def node_count(self) -> int:
        """Stored Merkle tree nodes."""
        ...

    def serial_reads(self) -> AbstractContextManager[None]:
        """Reads in this block use one process of the database server (PostgreSQL:
        no parallel workers): for whole-table reads made beside another connection's
        work, whose cores those workers would take."""
        ...

    def add_head(self, head: SignedTreeHead) -> None:
        """Store a signed tree head (idempotent)."""
        ...

    def heads(self) -> list[SignedTreeHead]:
        """Every stored tree head, by size then timestamp."""
        ...

    def maintain(self) -> None:
        """Rebuild missing query indexes (PostgreSQL: and replace an older ledger's
        B-tree on edges.digest by a hash index), refresh planner statistics and
        reclaim space (``trainguard ledger maintain``)."""
        ...

    def deferred_indexes(self) -> AbstractContextManager[None]:
        """For a bulk import: drop the derived tables' query indexes, rebuild them on exit.

        Appends stay atomic and every table stays consistent; queries in the
        meantime are correct but slow. Building an index once, sorted, is much
        cheaper than inserting into it row by row at random places.
        """
        ...

    def close(self) -> None: ...


def open_storage(url: str | LedgerURL | None = None) -> Storage:
    """Open the backend a ledger URL names (``None``: the one rule of :func:`resolve_url`)."""
    parsed = url if isinstance(url, LedgerURL) else resolve_url(url)
    if parsed.scheme == "postgresql":
        from trainguard.ledger.storage.postgres import PostgresStorage

        return PostgresStorage(parsed)
    from trainguard.ledger.storage.sqlite import SQLiteStorage

    return SQLiteStorage(parsed)
