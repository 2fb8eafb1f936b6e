"""PostgreSQL backend: the cluster ledger, shared by every node (psycopg 3).

Appends take a transaction-scoped advisory lock named after the ledger's
schema before reading the tree size, so concurrent writers on many hosts are
serialized: leaf indexes have no gaps or duplicates, and a writer that dies
mid-append leaves nothing behind (its transaction is rolled back and its lock
released). An append returns after ``COMMIT``: acknowledged means durable.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from trainguard.errors import ConfigError, StorageError
from trainguard.ledger._index import INTEGER_COLUMNS, TABLES
from trainguard.ledger.storage import AppendResult, PreparedEntry
from trainguard.ledger.storage._base import SQLStorage, _check_name, wrap
from trainguard.ledger.storage._url import LedgerURL

__all__ = ["PostgresStorage"]

#: Below this many entries, scans are cheap and statistics do not matter.
_ANALYZE_FROM = 1 << 16

#: PostgreSQL type oids: int8, text and their array types.
_INT8, _TEXT, _INT8_ARRAY, _TEXT_ARRAY = 20, 25, 1016, 1009
_INT64 = range(-(1 << 63), 1 << 63)
_HEADER = struct.Struct(">iiiii")
_LENGTH = struct.Struct(">i").pack
_INT8_ITEM = struct.Struct(">iq").pack
_first = itemgetter(0)
#: Query indexes that are hash indexes here, not B-trees. A large blast radius
#: probes edges.digest once per digest its runs produced (85k for the benchmark's
#: environment baseline, most of them never read by another run): a hash index is
#: a third of the B-tree's size (it stays in shared buffers) and a probe reads two
#: pages, not four or five: a closure step of 40k digests 0.37 -> 0.15 s.
_HASHED = frozenset({("edges", "digest")})


class _Int8Array(bytes):
    """A ``bigint[]`` parameter already in PostgreSQL's binary array format."""


class _TextArray(bytes):
    """A ``text[]`` parameter already in PostgreSQL's binary array format."""


def array_param(values: Sequence[Any]) -> Any:
    """``values`` as one binary array parameter (``%b``), encoded here in one pass.

    psycopg's list dumper spends ~4 us a value in Python (0.4 s for the probes of
    a large blast radius); this takes ~0.2 us. A list of anything but plain
    64-bit ints, or of anything but plain strings, goes to psycopg as it is (as
    does an empty one: its element type cannot be told)."""
    n = len(values)
    if not n:
        return list(values)
    # ndim 1, no nulls, the element type; the one dimension: length, lower bound 1;
    # then each element as its 4-byte length and its bytes.
    if all(type(v) is int and v in _INT64 for v in values):
        items = [_INT8_ITEM(8, v) for v in values]
        return _Int8Array(_HEADER.pack(1, 0, _INT8, n, 1) + b"".join(items))
    if all(type(v) is str for v in values):
        try:
            items = [_LENGTH(len(b)) + b for v in values for b in (v.encode("utf-8"),)]
        except UnicodeEncodeError:  # a lone surrogate: psycopg reports it as it would
            return list(values)
        return _TextArray(_HEADER.pack(1, 0, _TEXT, n, 1) + b"".join(items))
    return list(values)


def _runs_of(leaves: Sequence[int]) -> tuple[list[int], list[int]]:
    """The runs of consecutive values of sorted ``leaves``: their firsts and lasts."""
    firsts, lasts = [leaves[0]], []
    previous = leaves[0]
    for leaf in leaves:
        if leaf > previous + 1:
            lasts.append(previous)
            firsts.append(leaf)
        previous = leaf
    lasts.append(previous)
    return firsts, lasts


def _register_arrays(conn: Any) -> None:
    """Teach ``conn`` to send :func:`array_param`'s arrays as they are."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    for cls, oid in ((_Int8Array, _INT8_ARRAY), (_TextArray, _TEXT_ARRAY)):

        class _Encoded(Dumper):
            format = Format.BINARY

            def dump(self, obj: Any) -> bytes:
                return bytes(obj)

        _Encoded.oid = oid
        conn.adapters.register_dumper(cls, _Encoded)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            "a PostgreSQL ledger needs psycopg 3", hint="pip install 'trainguard[postgres]'"
        ) from exc
    return psycopg


class PostgresStorage(SQLStorage):
    """A ledger in one schema of a PostgreSQL database."""

    param = "%s"
    blob = "BYTEA"
    bigint = "BIGINT"
    separate_process = True
    #: The entries of runs of consecutive leaves ``[lo, hi]``: one descent of the
    #: entries index per run of leaves, then its leaf pages in order. (A LATERAL
    #: subquery with OFFSET 0: the planner, misjudging how many rows a long array
    #: matches, would otherwise scan half the entries in a merge join.)
    _entries_by_range = (
        "SELECT e.leaf, e.kind, e.data, e.leaf_hash FROM unnest(%b::int8[], %b::int8[]) AS r(lo, hi)"
        " CROSS JOIN LATERAL (SELECT leaf, kind, data, leaf_hash FROM entries"
        " WHERE leaf >= r.lo AND leaf <= r.hi OFFSET 0) e"
    )

    #: :meth:`readers`: one probe of the digest index per digest (LATERAL with
    #: OFFSET 0: never a join the planner could turn into a scan of edges). A
    #: bitmap scan of a hash index for ``digest = ANY(array)`` rechecks every row it
    #: finds against each array element (27 s for 40k digests), so the index is only
    #: ever probed a value at a time. (A ledger made before the hash index has a
    #: B-tree there, probed so 15% slower than by one bitmap scan, until
    #: :meth:`maintain`.) The runs' own rows are left out by a hashed anti-join
    #: (``NOT (run_id = ANY(...))`` would compare each row with every run).
    _probe_sql = (
        "SELECT u.leaf, u.run_id, u.direction, u.digest, u.artifact_kind"
        " FROM {digests} CROSS JOIN LATERAL"
        " (SELECT leaf, run_id, direction, digest, artifact_kind"
        " FROM edges WHERE digest = d.digest OFFSET 0) u"
        " WHERE NOT EXISTS (SELECT 1 FROM unnest(%b::text[]) AS f(run_id)"
        " WHERE f.run_id = u.run_id)"
    )
    _readers_sql = _probe_sql.replace("{digests}", "unnest(%b::text[]) AS d(digest)")
    #: :meth:`product_readers`: the same probes from the produced rows (read once:
    #: MATERIALIZED), then one row with their number and fingerprint.
    _product_readers_sql = (
        "WITH p AS MATERIALIZED (SELECT leaf, digest FROM edges"
        " WHERE run_id = ANY(%b) AND direction = 'produced') "
        + _probe_sql.replace("{digests}", "p AS d")
        + " UNION ALL SELECT NULL, count(*)::text, encode(sha256(convert_to("
        "coalesce(string_agg(digest, E'\\n' ORDER BY leaf), ''), 'UTF8')), 'hex'), NULL, NULL"
        " FROM p"
    )
    #: The entries of runs of consecutive leaves without their kind column (an edge
    #: entry's text says its kind), as :attr:`_entries_by_range`.
    _edge_entries_by_range = (
        "SELECT e.leaf, e.data, e.leaf_hash FROM unnest(%b::int8[], %b::int8[]) AS r(lo, hi)"
        " CROSS JOIN LATERAL (SELECT leaf, data, leaf_hash FROM entries"
        " WHERE leaf >= r.lo AND leaf <= r.hi OFFSET 0) e"
    )

    def __init__(self, url: LedgerURL) -> None:
        super().__init__(url)
        if url.dsn is None:
            raise StorageError(
                "a PostgreSQL ledger URL needs a connection string", subject=url.text
            )
        self.schema = url.schema
        # A 64-bit advisory lock key private to this ledger's schema.
        digest = hashlib.sha256(f"trainguard.ledger:{self.schema}".encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], "big", signed=True)
        self._conn: Any = None
        self._psycopg = _psycopg()

    @property
    def conn(self) -> Any:
        if self._conn is None:
            try:
                conn = self._psycopg.connect(self.url.dsn, autocommit=True)
                conn.execute(f'SET search_path TO "{self.schema}"')
                # The planner's row estimates for long ANY() lists are far off, and
                # JIT then compiles for ~60 ms queries that take a few hundred.
                conn.execute("SET jit = off")
                _register_arrays(conn)
            except self._psycopg.Error as exc:
                raise wrap(exc, self.url, "connecting") from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _execute(
        self, sql: str, params: Sequence[Any] = (), binary: bool = False
    ) -> list[tuple[Any, ...]]:
        try:
            cur = self.conn.execute(sql, params or None, binary=binary)
            return cur.fetchall() if cur.description is not None else []
        except self._psycopg.Error as exc:
            raise wrap(exc, self.url, "querying") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # Binary results: entry bytes and hashes arrive as they are, not as hex
        # text to decode (half the client's time reading entries).
        return self._execute(sql, params, binary=True)

    @contextmanager
    def serial_reads(self) -> Iterator[None]:
        self._execute("SET max_parallel_workers_per_gather = 0")
        try:
            yield
        finally:
            self._execute("RESET max_parallel_workers_per_gather")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            with self.conn.transaction():
                self._execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                yield
        except self._psycopg.Error as exc:
            raise wrap(exc, self.url, "committing") from exc

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        # Binary COPY: hashes and entry bytes travel as they are, not as hex
        # text the server must decode (half the server's work for entries).
        types = [self._column_type(table, c) for c in columns]
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        try:
            with self.conn.cursor().copy(sql) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        except self._psycopg.Error as exc:
            raise wrap(exc, self.url, f"inserting into {table}") from exc

    @staticmethod
    def _column_type(table: str, column: str) -> str:
        if table in ("entries", "nodes") and column in ("data", "leaf_hash", "hash"):
            return "bytea"
        if column in INTEGER_COLUMNS or (table, column) == ("nodes", "id"):
            return "int8"
        return "text"

    def append(self, entries: Sequence[PreparedEntry]) -> AppendResult:
        result = super().append(entries)
        # Without statistics the planner takes an index lookup of a few hundred
        # digests for a scan of millions of rows. Autovacuum refreshes them in
        # normal operation; when the log doubles, refresh them here too (a
        # sampled ANALYZE, O(log n) times over the life of the ledger).
        if result.size >= _ANALYZE_FROM and result.first.bit_length() != result.size.bit_length():
            self._analyze()
        return result

    def _analyze(self) -> None:
        for table in ("entries", "nodes", *TABLES):
            self._execute(f"ANALYZE {table}")

    def _index_ddl(self) -> list[str]:
        return [
            f"CREATE INDEX IF NOT EXISTS {t}_{c} ON {t}"
            + (f" USING hash ({c})" if (t, c) in _HASHED else f" ({c})")
            for t, c in self._indexes()
        ]

    def _rebuild_indexes(self) -> None:
        with self._locked():
            # A ledger made before edges.digest had a hash index gets one here.
            if self._digest_index() not in (None, "hash"):
                self._execute("DROP INDEX edges_digest")
            for stmt in self._index_ddl():
                self._execute(stmt)

    def _digest_index(self) -> str | None:
        """The access method of the index on edges.digest (``None``: there is none)."""
        rows = self._execute(
            "SELECT am.amname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_am am ON am.oid = c.relam WHERE n.nspname = %s AND c.relname = %s",
            (self.schema, "edges_digest"),
        )
        return str(rows[0][0]) if rows else None

    def maintain(self) -> None:
        self._rebuild_indexes()
        for table in ("entries", "nodes", *TABLES):
            self._execute(f"VACUUM (ANALYZE) {table}")

    def _table_exists(self, table: str) -> bool:
        rows = self._execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (self.schema, table),
        )
        return bool(rows)

    def _prepare_schema(self) -> None:
        # Concurrent CREATE SCHEMA IF NOT EXISTS can still race on the catalog;
        # the advisory lock makes the first creator win cleanly.
        with self._locked():
            self._execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def _in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        # One array parameter, sent in binary (%b): the text form costs the client
        # its quoting and the server its parsing, half the time of a 10^5-value probe.
        # (A ``%b`` of this backend's own SQL stands for the values too.)
        if not values:
            return []
        sql = sql.replace("IN ({inl})", "= ANY(%b)")
        return self._read(sql, (array_param(values),) * sql.count("%b"))

    def select(self, table: str, column: str, values: Collection[Any]) -> list[tuple[Any, ...]]:
        if (table, column) not in _HASHED:
            return super().select(table, column, values)
        # A hash index is probed a value at a time (see _readers_sql).
        cols = ", ".join(TABLES[table])
        sql = (
            f"SELECT {cols} FROM unnest(%b::text[]) AS v(x) CROSS JOIN LATERAL"
            f" (SELECT {cols} FROM {table} WHERE {column} = v.x OFFSET 0) t ORDER BY t.leaf"
        )
        return self._in(sql, list(set(values)))

    def readers(self, digests: Collection[str], run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        if not digests:
            return []
        runs = list(set(run_ids)) or [""]  # (an empty array's element type cannot be told)
        # In the order given (a closure gives them as produced): each digest's
        # producing row, found by its probe too, then lies near the last one's in the
        # table (sorted by digest, 85k of them took half again as long).
        arrays = (array_param(list(dict.fromkeys(digests))), array_param(runs))
        rows = self._read(self._readers_sql, arrays)
        rows.sort(key=_first)
        return rows

    def product_readers(
        self, run_ids: Collection[str]
    ) -> tuple[list[tuple[Any, ...]], tuple[int, str]]:
        runs = array_param(list(set(run_ids)) or [""])
        rows = self._read(self._product_readers_sql, (runs, runs))
        _, count, fingerprint, _, _ = rows.pop()
        rows.sort(key=_first)
        return rows, (int(count), fingerprint)

    def rows_with_entries(
        self, table: str, column: str, values: Collection[Any]
    ) -> list[tuple[Any, ...]]:
        _check_name(table, column)
        sql = f"SELECT {', '.join(TABLES[table])} FROM {table} WHERE {column} IN ({{inl}})"
        return self._with_entries(self._in(sql, list(set(values))), self._entries_by_range, 3)

    def edge_entries(self, run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        sql = "SELECT leaf, run_id FROM edges WHERE run_id IN ({inl})"
        rows = self._in(sql, list(set(run_ids)))
        return self._with_entries(rows, self._edge_entries_by_range, 2)

    def _with_entries(
        self, rows: list[tuple[Any, ...]], by_range: str, width: int
    ) -> list[tuple[Any, ...]]:
        """``rows`` by leaf, each extended by the ``width`` columns ``by_range`` reads
        of its entry (``None`` each where no entry has that leaf).

        Two reads: the rows, then their entries by runs of consecutive leaves. A
        run's edges are appended together, so a closure step's 10^4-10^5 rows are
        ~10^3 runs of leaves: a quarter less time than a probe of the entries index
        per row (the join the base class makes) for 47k rows."""
        if not rows:
            return []
        rows.sort(key=_first)
        leaves = [r[0] for r in rows]
        lo, hi = _runs_of(leaves)
        found = self._read(by_range, (array_param(lo), array_param(hi)))
        found.sort(key=_first)  # (in range order already: a linear pass)
        if len(found) == len(rows) and [e[0] for e in found] == leaves:
            return [r + e[1:] for r, e in zip(rows, found, strict=True)]
        entries = {e[0]: e[1:] for e in found}
        missing = (None,) * width
        return [r + entries.get(r[0], missing) for r in rows]
